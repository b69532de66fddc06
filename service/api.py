"""The REST API (FastAPI): ISMRMRD HDF5 in, DICOM / NIfTI / ISMRMRD images / PNG out, plus health and metrics.

``POST /v1/reconstructions`` streams the upload to disk (size-limited), reads it with ``models.data`` (every
problem a user can cause -> 4xx JSON naming it), hands the samples to the engine (dynamic batching; a full queue
-> 503 with Retry-After) and returns the packaged result; ``?mode=async`` spools the job instead (202 + id) and
``GET /v1/reconstructions/{id}`` / ``.../result`` report and deliver it. Errors are JSON
``{"error": code, "message": text, "request_id": id}``.

``create_app`` assembles the parts in ``service.rest``: the shared state and job runner (on ``app.state``), the
lifespan, the middleware, the exception handlers and the routers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from mrdserve.service.config import ServiceConfig
from mrdserve.service.rest import catalog, health, jobs, reconstructions
from mrdserve.service.rest.context import RequestContext
from mrdserve.service.rest.docs import serve_docs_locally
from mrdserve.service.rest.errors import EXCEPTION_HANDLERS, ApiError
from mrdserve.service.rest.job_runner import JobRunner
from mrdserve.service.rest.lifecycle import lifespan
from mrdserve.service.rest.state import ServiceState
from mrdserve.service.rest.web import serve_web_page
from mrdserve.service.slow_clients import BodyReadTimeout
from mrdserve.service.spool import JobSpool

DESCRIPTION = "Online MRI reconstruction: POST an ISMRMRD HDF5 file, get DICOM, NIfTI, ISMRMRD images or PNG back."
ROUTERS = (reconstructions.router, jobs.router, catalog.router, health.router)


def create_app(config: ServiceConfig, engine: Any = None, spool: JobSpool | None = None) -> FastAPI:
    """The FastAPI app serving ``engine`` (built from ``config`` and started with the app when None); ``spool``
    (default: one at ``config.spool_dir``) is owned by the app while it runs."""
    if engine is None:
        from mrdserve.service.engine.engine import Engine
        engine = Engine(config)
    spool = spool or JobSpool(config.spool_dir, config.spool_max_bytes, config.result_ttl_s)
    state = ServiceState(config, engine, spool)
    app = FastAPI(title="mrdserve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=DESCRIPTION, exception_handlers=EXCEPTION_HANDLERS)
    app.state.service, app.state.jobs = state, JobRunner(state)
    app.state.engine, app.state.spool, app.state.config = engine, spool, config
    app.state.drain = state.drain  # called by the server when shutdown begins (service.serve)
    serve_docs_locally(app)
    serve_web_page(app)
    add_middleware(app, config)
    for router in ROUTERS:
        app.include_router(router)
    return app


def add_middleware(app: FastAPI, config: ServiceConfig) -> None:
    """Innermost first: the body read timeout, the request context (id + log line), then CORS when configured."""
    app.add_middleware(BodyReadTimeout, timeout_s=config.read_timeout_s, on_timeout=lambda seconds: ApiError(
        408, "read_timeout", f"the request body stopped arriving for {seconds:g} s (MRDSERVE_READ_TIMEOUT_S)",
        {"Connection": "close"}))
    app.add_middleware(RequestContext)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])
