"""The REST API (FastAPI): ISMRMRD HDF5 in, DICOM / NIfTI / ISMRMRD images / PNG out, plus health and metrics.

``POST /v1/reconstructions`` streams the upload to disk (size-limited), reads it with ``models.data`` (every
problem a user can cause -> 4xx JSON naming it), hands the samples to the engine (dynamic batching; a full queue
-> 503 with Retry-After) and returns the packaged result; ``?mode=async`` spools the job instead (202 + id) and
``GET /v1/reconstructions/{id}`` / ``.../result`` report and deliver it. Errors are JSON
``{"error": code, "message": text, "request_id": id}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import h5py
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mrdserve.models.data.baseline import METHODS
from mrdserve.models.data.input_errors import InputError, LimitError
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service import bounded_read
from mrdserve.service.admission import Budget
from mrdserve.service.config import ServiceConfig
from mrdserve.service.log import log_event, new_request_id, request_id_var
from mrdserve.service.memory import release_memory
from mrdserve.service.metrics import render
from mrdserve.service.pacs import PacsTarget, PushReport, dicom_files_in_zip, push
from mrdserve.service.slow_clients import BodyReadTimeout
from mrdserve.service.spool import FAILED, SUCCEEDED, Job, JobSpool, SpoolFullError

logger = logging.getLogger("mrdserve.api")

UPLOAD_FIELD = "file"
MULTIPART_SLACK = 64 * 1024  # multipart framing and other fields around the file part, on top of the upload limit
MAX_MULTIPART_PARTS = 16  # a form with the file and a few small fields; more is not a client of ours
MAX_PART_HEADER_BYTES = 8 * 1024
EXPIRY_INTERVAL_S = 60.0
RECONSTRUCTION_PARAMETERS = ("format", "artifact", "group", "method", "mode")


class OutputFormat(StrEnum):
    dicom = "dicom"
    nifti = "nifti"
    ismrmrd = "ismrmrd"
    png = "png"


class Mode(StrEnum):
    sync = "sync"
    async_ = "async"


ClassicalMethod = StrEnum("ClassicalMethod", {name.replace("-", "_"): name for name in METHODS})
AUTO_METHOD = ClassicalMethod("auto")


class ApiError(Exception):
    """An error with its HTTP status, a stable code and a message a person can act on."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# ------------------------------------------------------------------------------------------------ upload
async def receive_upload(request: Request, destination: Path, max_bytes: int, too_large: ApiError) -> int:
    """Stream the request's file (multipart field ``file``, or a raw HDF5 body) to ``destination``; its size."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + MULTIPART_SLACK:
        raise too_large
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    written = 0
    with open(destination, "wb") as sink:
        def write(data: bytes) -> None:
            nonlocal written
            written += len(data)
            if written > max_bytes:
                raise too_large
            sink.write(data)

        if content_type == b"multipart/form-data":
            found = await _receive_multipart(request, options.get(b"boundary"), write)
            if not found:
                raise ApiError(422, "missing_file", f"the multipart upload has no field {UPLOAD_FIELD!r}; send the "
                                                    f"ISMRMRD file as multipart field {UPLOAD_FIELD!r}")
        else:
            async for chunk in request.stream():
                write(chunk)
    if written == 0:
        raise ApiError(422, "empty_upload", "the upload is empty; send an ISMRMRD HDF5 file as multipart field "
                                            f"{UPLOAD_FIELD!r}")
    return written


async def _receive_multipart(request: Request, boundary: bytes | None, write: Callable[[bytes], None]) -> bool:
    """Feed the body through a streaming multipart parser, writing only the ``file`` part; whether it was found."""
    if not boundary:
        raise ApiError(400, "bad_multipart", "multipart/form-data upload without a boundary")
    state = {"field": b"", "value": b"", "headers": {}, "target": False, "found": False, "parts": 0, "other": 0,
             "header_bytes": 0}

    def count_header(size: int) -> None:
        state["header_bytes"] += size
        if state["header_bytes"] > MAX_PART_HEADER_BYTES:
            raise ApiError(400, "bad_multipart", f"a multipart part's headers exceed {MAX_PART_HEADER_BYTES} bytes")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        count_header(end - start)
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        count_header(end - start)
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"] = state["value"] = b""

    def on_headers_finished() -> None:
        state["parts"] += 1
        state["header_bytes"] = 0
        if state["parts"] > MAX_MULTIPART_PARTS:
            raise ApiError(400, "bad_multipart", f"the multipart upload has more than {MAX_MULTIPART_PARTS} parts; "
                                                 f"send the ISMRMRD file as field {UPLOAD_FIELD!r}")
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["target"] = disposition.get(b"name") == UPLOAD_FIELD.encode() and not state["found"]
        state["found"] = state["found"] or state["target"]
        state["headers"] = {}

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["target"]:
            write(data[start:end])
            return
        state["other"] += end - start
        if state["other"] > MULTIPART_SLACK:
            raise ApiError(413, "too_large", f"the multipart fields other than {UPLOAD_FIELD!r} exceed "
                                             f"{MULTIPART_SLACK} bytes", {"Connection": "close"})

    def on_part_end() -> None:
        state["target"] = False

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        raise
    except Exception as error:  # python-multipart raises its own parse errors
        raise ApiError(400, "bad_multipart", f"the multipart upload could not be parsed: {error}") from error
    return bool(state["found"])


# ------------------------------------------------------------------------------------------------ ingest
def ingest(path: Path, group: str, budget: Budget) -> tuple[Any, list[KSpaceSample]]:
    """Read an uploaded ISMRMRD file into samples, admitted by its declared sizes first, in a bounded child
    process (``service.bounded_read``); ``ApiError`` (4xx) naming what is wrong."""
    try:
        return bounded_read.read_bounded(path, group, budget)
    except InputError as error:
        raise input_error(error, str(path)) from None


def finish_request(work_dir: Path) -> None:
    """After a response: its files go, and the C heap gives the request's memory back to the system."""
    shutil.rmtree(work_dir, ignore_errors=True)
    release_memory()


def input_error(error: InputError, path: str = "") -> ApiError:
    """The HTTP error for an input error: 413 beyond a limit, 415 not HDF5, 422 otherwise."""
    status = 413 if isinstance(error, LimitError) else 415 if error.code == "not_hdf5" else 422
    message = str(error).replace(path, "the upload") if path else str(error)
    return ApiError(status, error.code, message)


def package(results: list[Any], header: Any, fmt: str, work_dir: Path) -> Any:
    """The results as one file in ``fmt`` (``service.outputs.package``), imported when first needed."""
    from mrdserve.service.outputs.package import package_results
    return package_results(results, header, fmt, work_dir)


# ------------------------------------------------------------------------------------------------ app
DOCS_ASSETS = "/docs-assets"


def serve_docs_locally(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from assets installed with fastapi-offline, never from a CDN, so the
    API documentation works in a hospital network without internet access."""
    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> Response:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="mrdserve API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                                   swagger_ui_parameters={"validatorUrl": None})  # no badge from the internet

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> Response:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title="mrdserve API",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


def only_query(*names: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing (422) query parameters other than ``names``, and any given twice."""
    allowed = set(names)

    async def check(request: Request) -> None:
        counts = Counter(key for key, _ in request.query_params.multi_items())
        unknown = sorted({key[:50] for key in counts if key not in allowed})
        if unknown:
            known = (f"; this endpoint takes {', '.join(sorted(allowed))}" if allowed
                     else "; this endpoint takes no query parameters")
            raise ApiError(422, "unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)}{known}")
        repeated = sorted(key for key, count in counts.items() if count > 1)
        if repeated:
            raise ApiError(422, "repeated_parameter", f"query parameter(s) given more than once: "
                                                      f"{', '.join(repeated)}")

    return check


RECONSTRUCTION_QUERY = only_query(*RECONSTRUCTION_PARAMETERS)
NO_QUERY = only_query()


def _error_response(error: ApiError) -> JSONResponse:
    body = {"error": error.code, "message": error.message, "request_id": request_id_var.get()}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


class RequestContext:
    """Pure ASGI middleware: a request id per request (``X-Request-ID``), and one JSON log line per request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 64 and given.replace("-", "").isalnum() else new_request_id()
        token = request_id_var.set(request_id)
        started, status = time.perf_counter(), {"code": 500}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_event(logger, "request", method=scope["method"], path=scope["path"], status=status["code"],
                      duration_ms=round(1000 * (time.perf_counter() - started), 2))
            request_id_var.reset(token)


def _engine_error_types() -> tuple[type[BaseException], type[BaseException]]:
    from mrdserve.service.engine.batcher import QueueFullError, ReconstructionError
    return QueueFullError, ReconstructionError


def create_app(config: ServiceConfig, engine: Any = None, spool: JobSpool | None = None) -> FastAPI:
    """The FastAPI app serving ``engine`` (built from ``config`` and started with the app when None); ``spool``
    (default: one at ``config.spool_dir``) is owned by the app while it runs."""
    if engine is None:
        from mrdserve.service.engine.engine import Engine
        engine = Engine(config)
    queue_full_error, reconstruction_error = _engine_error_types()
    spool = spool or JobSpool(config.spool_dir, config.spool_max_bytes, config.result_ttl_s)
    work_root = Path(config.spool_dir) / "work"
    state: dict[str, Any] = {"start_error": None, "tasks": set(), "draining": False}
    job_queue: asyncio.Queue[str] = asyncio.Queue()
    ready = asyncio.Event()
    # Reading uploads and packaging results is CPU work: one slot per core keeps many concurrent requests from
    # oversubscribing the CPU that inference needs (16 clients on 2 cores lost a quarter of the throughput).
    cpu_slots = asyncio.Semaphore(os.cpu_count() or 1)

    async def cpu_bound(function: Callable[..., Any], *args: Any) -> Any:
        async with cpu_slots:
            return await run_in_threadpool(function, *args)

    # -------------------------------------------------------------------------------------- lifecycle
    async def start_engine() -> None:
        try:
            await engine.start()
        except Exception as error:  # reported by /readyz and the log, the process stays up
            state["start_error"] = str(error)
            log_event(logger, "engine_start_failed", logging.ERROR, reason=str(error))
            return
        ready.set()
        for job in spool.recover():
            log_event(logger, "job_recovered", job_id=job.id, attempts=job.attempts)
            job_queue.put_nowait(job.id)
        log_event(logger, "ready", models=len(engine.models()))

    async def expire_results() -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL_S)
            removed = await run_in_threadpool(spool.expire)
            if removed:
                log_event(logger, "jobs_expired", count=removed)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        spool.acquire()  # SpoolInUseError: another instance runs these jobs; refuse to start
        shutil.rmtree(work_root, ignore_errors=True)
        work_root.mkdir(parents=True, exist_ok=True)
        background = [asyncio.create_task(start_engine()), asyncio.create_task(expire_results()),
                      asyncio.create_task(run_in_threadpool(bounded_read.start))]  # the file readers' forkserver
        background += [asyncio.create_task(job_worker()) for _ in range(max(1, config.max_batch))]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await engine.shutdown()
            spool.release()
            log_event(logger, "stopped")

    app = FastAPI(title="mrdserve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, description=(
        "Online MRI reconstruction: POST an ISMRMRD HDF5 file, get DICOM, NIfTI, ISMRMRD images or PNG back."))
    serve_docs_locally(app)
    app.add_middleware(BodyReadTimeout, timeout_s=config.read_timeout_s, on_timeout=lambda seconds: ApiError(
        408, "read_timeout", f"the request body stopped arriving for {seconds:g} s (MRDSERVE_READ_TIMEOUT_S)",
        {"Connection": "close"}))
    app.add_middleware(RequestContext)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])
    app.state.engine, app.state.spool, app.state.config = engine, spool, config

    def drain() -> None:
        """Shutdown has begun: no new jobs start; work cut by the shutdown is answered 503 / requeued."""
        state["draining"] = True

    app.state.drain = drain

    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, error: ApiError) -> JSONResponse:
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                             for e in error.errors())
        return _error_response(ApiError(422, "invalid_parameter", problems))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error_response(ApiError(error.status_code, "http_error", str(error.detail), dict(error.headers or {})))

    @app.exception_handler(Exception)
    async def on_internal_error(_: Request, error: Exception) -> JSONResponse:  # a bug of ours, never input
        logger.error("internal_error", exc_info=error, extra={"event": "internal_error"})
        return _error_response(ApiError(500, "internal_error", f"internal error ({type(error).__name__}); the "
                                                               f"request id identifies it in the service log"))

    # -------------------------------------------------------------------------------------- auth
    async def require_api_key(request: Request) -> None:
        if not config.api_keys:
            return
        given = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if given is None and authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        if given is None or not any(hmac.compare_digest(given.encode(), key.encode()) for key in config.api_keys):
            raise ApiError(401, "unauthorized", "a valid API key is required: send it as header X-API-Key or "
                                                "Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})

    # -------------------------------------------------------------------------------------- reconstruction
    async def reconstruct(samples: list[KSpaceSample], artifact: str | None,
                          disconnected: Callable[[], Awaitable[bool]] | None = None,
                          method: str = "auto") -> list[Any]:
        """Run the engine, mapping its errors to API errors; cancel it when the client goes away."""
        task = asyncio.ensure_future(engine.reconstruct(samples, artifact=artifact, request_id=request_id_var.get(),
                                                        method=method))
        engine.metrics.inflight_requests.inc()
        try:
            while disconnected is not None and not task.done():
                await asyncio.wait({task}, timeout=0.25)
                if not task.done() and await disconnected():
                    task.cancel()
                    log_event(logger, "client_disconnected")
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not state["draining"] or current is None:
                raise
            current.uncancel()  # cut by the shutdown's grace period: answer instead of dropping the request
            raise ApiError(503, "shutting_down", "the service is shutting down and could not finish this "
                                                 "reconstruction; retry it", {"Retry-After": "5"}) from None
        except queue_full_error as error:
            retry = max(1, math.ceil(float(getattr(error, "retry_after_s", 1.0))))
            raise ApiError(503, "queue_full", f"{error}; retry after {retry} s", {"Retry-After": str(retry)}) from error
        except reconstruction_error as error:
            raise ApiError(500, "reconstruction_failed", f"the reconstruction failed: {error}") from error
        except TimeoutError as error:
            raise ApiError(504, "timeout", str(error) or "the reconstruction timed out") from error
        except ValueError as error:
            raise ApiError(422, "invalid_request", str(error)) from error
        finally:
            engine.metrics.inflight_requests.dec()
            if not task.done():
                task.cancel()

    pacs_target = PacsTarget.from_config(config)

    async def push_to_pacs(packaged: Any, fmt: str) -> PushReport | None:
        """Push a DICOM result when a PACS is configured; counted and logged (no patient data), never raises."""
        if pacs_target is None or fmt != OutputFormat.dicom.value:
            return None
        try:
            files = await run_in_threadpool(dicom_files_in_zip, Path(packaged.path))
            report = await run_in_threadpool(push, files, pacs_target)
        except Exception as error:
            report = PushReport(pacs_target.protocol, 0, error=f"{type(error).__name__} while reading the result")
        engine.metrics.pacs_push.labels(protocol=report.protocol, outcome=report.outcome).inc()
        log_event(logger, "pacs_push", logging.INFO if report.outcome == "ok" else logging.WARNING,
                  protocol=report.protocol, outcome=report.outcome, instances=report.instances, stored=report.stored,
                  reason=report.error)
        return report

    def _result_headers(results: list[Any]) -> dict[str, str]:
        labels = sorted({str(r.label) for r in results})
        headers = {"X-Mrdserve-Slices": str(len(results)), "X-Mrdserve-Labels": ",".join(labels)}
        fallbacks = sorted({r.fallback_reason for r in results if r.fallback_reason})
        if fallbacks:
            headers["X-Mrdserve-Fallback"] = "; ".join(fallbacks).encode("ascii", "replace").decode()[:500]
        return headers

    def _count(results: list[Any] | None, outcome: str) -> None:
        labels = sorted({r.label for r in results}) if results else ["none"]
        for label in labels:
            engine.metrics.count_request("rest", label, outcome)

    def check_ready() -> None:
        if not ready.is_set():
            reason = state["start_error"] or "the engine is loading and warming up its artifacts"
            raise ApiError(503, "not_ready", f"not ready: {reason}", {"Retry-After": "5"})

    @app.post("/v1/reconstructions", dependencies=[Depends(require_api_key), Depends(RECONSTRUCTION_QUERY)],
              openapi_extra={
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": [UPLOAD_FIELD],
            "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary",
                                          "description": "ISMRMRD HDF5 file"}}}}}}},
        responses={200: {"description": "the result file (zip for dicom/png, .nii.gz, .h5)"},
                   202: {"description": "async job accepted"}, 413: {"description": "upload too large"},
                   415: {"description": "not HDF5"}, 422: {"description": "bad ISMRMRD input"},
                   503: {"description": "queue full (Retry-After) or not ready"}})
    async def create_reconstruction(
        request: Request,
        format: Annotated[OutputFormat, Query(description="dicom/png -> zip, nifti, ismrmrd -> HDF5")] = (
            OutputFormat.dicom),
        artifact: Annotated[str | None, Query(description="artifact name or name-version; default: the one that "
                                                          "fits")] = None,
        group: Annotated[str, Query(description="ISMRMRD dataset group in the file")] = "dataset",
        method: Annotated[ClassicalMethod, Query(description="classical method wherever the classical path is "
                                                             "used (artifact=classical, or no artifact is "
                                                             "validated for the data); auto: the best per data")] = (
            AUTO_METHOD),
        mode: Annotated[Mode, Query(description="async: 202 with a job id, poll /v1/reconstructions/{id}")] = (
            Mode.sync),
    ) -> Response:
        """Reconstruct an uploaded ISMRMRD file and return the images in the format asked for."""
        params = {"format": format.value, "artifact": artifact, "group": group, "method": method.value}
        too_large = ApiError(413, "too_large", f"the upload is larger than the limit of {config.upload_max_bytes} "
                                               f"bytes (upload_max_bytes)", {"Connection": "close"})
        if mode is Mode.async_:  # spooled jobs are accepted while warming up; they run once ready
            return await accept_job(request, params, too_large)
        check_ready()
        started = time.perf_counter()
        work_dir = work_root / uuid.uuid4().hex
        work_dir.mkdir(parents=True)
        results = None
        try:
            upload = work_dir / "input.h5"
            await receive_upload(request, upload, config.upload_max_bytes, too_large)
            header, samples = await cpu_bound(ingest, upload, group, config.budget)
            ingested = time.perf_counter()
            results = await reconstruct(samples, artifact, request.is_disconnected, method.value)
            reconstructed = time.perf_counter()
            packaged = await cpu_bound(package, results, header, format.value, work_dir / "out")
            finished = time.perf_counter()
        except ApiError as error:
            finish_request(work_dir)
            _count(results, "rejected" if error.status < 500 or error.status == 503 else "failed")
            raise
        except BaseException:
            finish_request(work_dir)
            raise
        metrics = engine.metrics
        metrics.observe_stage("ingest", ingested - started)
        metrics.observe_stage("output", finished - reconstructed)
        metrics.observe_stage("total", finished - started)
        _count(results, "ok")
        log_event(logger, "reconstructed", slices=len(results), format=format.value,
                  labels=sorted({r.label for r in results}), total_ms=round(1000 * (finished - started), 2))
        headers = _result_headers(results)
        headers["X-Mrdserve-Timings"] = (f"ingest={ingested - started:.4f};reconstruct={reconstructed - ingested:.4f};"
                                         f"output={finished - reconstructed:.4f}")
        pushed = await push_to_pacs(packaged, format.value)
        if pushed is not None:
            headers["X-Mrdserve-Pacs"] = pushed.header()
        return FileResponse(packaged.path, media_type=packaged.media_type, filename=packaged.filename,
                            headers=headers, background=BackgroundTask(finish_request, work_dir))

    # -------------------------------------------------------------------------------------- async jobs
    async def accept_job(request: Request, params: dict[str, Any], too_large: ApiError) -> JSONResponse:
        incoming = spool.incoming_path()
        try:
            room = await run_in_threadpool(spool.room)
            if room <= 0:
                raise SpoolFullError(f"the job spool is full ({config.spool_max_bytes} bytes); fetch or wait for "
                                     f"finished results to expire, or retry later")
            spool_full = ApiError(507, "spool_full", f"the upload does not fit in the job spool ({room} bytes free "
                                                     f"of {config.spool_max_bytes}); retry later",
                                  {"Retry-After": "60", "Connection": "close"})
            limit = min(config.upload_max_bytes, room)
            await receive_upload(request, incoming, limit, too_large if limit == config.upload_max_bytes
                                 else spool_full)
            if not h5py.is_hdf5(incoming):
                raise ApiError(415, "not_hdf5", "the upload is not an HDF5 file; send an ISMRMRD HDF5 file (.h5)")
            job = spool.create(incoming, params)
        except SpoolFullError as error:
            raise ApiError(507, "spool_full", str(error), {"Retry-After": "60"}) from error
        finally:
            incoming.unlink(missing_ok=True)
        job_queue.put_nowait(job.id)
        log_event(logger, "job_accepted", job_id=job.id)
        return JSONResponse({"id": job.id, "state": job.state, "status_url": f"/v1/reconstructions/{job.id}",
                             "result_url": f"/v1/reconstructions/{job.id}/result"}, status_code=202,
                            headers={"Location": f"/v1/reconstructions/{job.id}"})

    async def job_worker() -> None:
        await ready.wait()
        while not state["draining"]:
            job_id = await job_queue.get()
            if state["draining"]:
                return  # left queued in the spool: it runs after the restart
            job = spool.get(job_id)
            if job is None or job.state in (SUCCEEDED, FAILED):
                continue
            await run_job(job)

    def requeue(job: Job) -> None:
        job.attempts -= 1  # a clean shutdown does not count as a failed attempt; the job runs after restart
        spool.mark_queued(job)

    async def run_job(job: Job) -> None:
        token = request_id_var.set(f"job-{job.id[:12]}")
        work_dir = work_root / f"job-{job.id}"
        job = spool.mark_running(job)
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            params = job.params
            header, samples = await cpu_bound(ingest, spool.input_path(job), params.get("group", "dataset"),
                                             config.budget)
            while True:
                try:
                    results = await reconstruct(samples, params.get("artifact"),
                                                method=params.get("method", "auto"))
                    break
                except ApiError as error:  # accepted work waits for room in the queue instead of failing
                    if error.code != "queue_full":
                        raise
                    await asyncio.sleep(float(error.headers.get("Retry-After", "1")))
            packaged = await cpu_bound(package, results, header, params.get("format", "dicom"), work_dir)
            pushed = await push_to_pacs(packaged, params.get("format", "dicom"))
            job.pacs = None if pushed is None else pushed.public()
            spool.mark_succeeded(job, Path(packaged.path), packaged.media_type, packaged.filename, len(results))
            _count(results, "ok")
            log_event(logger, "job_succeeded", job_id=job.id, slices=len(results))
        except asyncio.CancelledError:
            requeue(job)
            raise
        except Exception as error:  # one job's failure must not stop the worker
            if state["draining"] and not (isinstance(error, ApiError) and error.status < 500):
                requeue(job)  # interrupted by the shutdown, not failed: it runs after the restart
            elif isinstance(error, ApiError):
                spool.mark_failed(job, error.message, error.status)
                _count(None, "rejected" if error.status < 500 else "failed")
                log_event(logger, "job_failed", logging.WARNING, job_id=job.id, status=error.status,
                          code=error.code)
            else:
                spool.mark_failed(job, f"internal error while running the job: {type(error).__name__}", 500)
                _count(None, "failed")
                logger.exception("job_crashed", extra={"event": "job_crashed", "job_id": job.id})
        finally:
            finish_request(work_dir)
            request_id_var.reset(token)

    @app.get("/v1/reconstructions/{job_id}", dependencies=[Depends(require_api_key), Depends(NO_QUERY)])
    async def job_status(job_id: str) -> dict[str, Any]:
        """The state of an asynchronous job: queued, running, succeeded (result ready) or failed (with reason)."""
        job = spool.get(job_id)
        if job is None:
            raise ApiError(404, "unknown_job", f"no job {job_id!r} (unknown, or expired after "
                                               f"{config.result_ttl_s:g} s)")
        return job.public()

    @app.get("/v1/reconstructions/{job_id}/result", dependencies=[Depends(require_api_key), Depends(NO_QUERY)])
    async def job_result(job_id: str) -> Response:
        """The result of a finished job, kept until it expires (``result_ttl_s`` after the job finished), so a
        broken download can be retried; ``Range`` requests are honoured."""
        job = spool.get(job_id)
        if job is None:
            raise ApiError(404, "unknown_job", f"no job {job_id!r} (unknown, or expired)")
        if job.state == FAILED:
            raise ApiError(409, "job_failed", f"job {job_id} failed: {job.error}")
        if job.state != SUCCEEDED:
            raise ApiError(409, "job_not_finished", f"job {job_id} is {job.state}; poll /v1/reconstructions/"
                                                    f"{job_id} until it has succeeded", {"Retry-After": "1"})
        path = spool.result_path(job)
        if path is None or not path.is_file():
            raise ApiError(410, "result_gone", f"the result of job {job_id} is no longer available")
        return FileResponse(path, media_type=job.media_type, filename=job.filename,
                            headers={"X-Mrdserve-Slices": str(job.slices)},
                            background=BackgroundTask(spool.mark_fetched, job))

    # -------------------------------------------------------------------------------------- info
    @app.get("/v1/models", dependencies=[Depends(require_api_key), Depends(NO_QUERY)])
    async def list_models() -> dict[str, Any]:
        """The artifacts the engine serves (name, version, task, constraints)."""
        return {"models": engine.models()}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok", "ready": ready.is_set()}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: artifacts loaded, verified and warmed up."""
        if ready.is_set() and getattr(engine, "ready", True):
            return JSONResponse({"status": "ready"})
        reason = state["start_error"] or "loading and warming up artifacts"
        return JSONResponse({"status": "failed" if state["start_error"] else "starting", "reason": reason},
                            status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics (text format)."""
        body, content_type = render(engine.metrics.registry)
        return Response(body, media_type=content_type)

    return app
