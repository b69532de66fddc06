"""Probes and metrics, open without an API key: ``/healthz`` (alive), ``/readyz`` (artifacts loaded and warmed)
and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from mrdserve.service.metrics import render
from mrdserve.service.rest.deps import State

router = APIRouter()


@router.get("/healthz")
async def healthz(state: State) -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"status": "ok", "ready": state.ready.is_set()}


@router.get("/readyz")
async def readyz(state: State) -> JSONResponse:
    """Readiness: artifacts loaded, verified and warmed up."""
    if state.ready.is_set() and getattr(state.engine, "ready", True):
        return JSONResponse({"status": "ready"})
    reason = state.start_error or "loading and warming up artifacts"
    return JSONResponse({"status": "failed" if state.start_error else "starting", "reason": reason},
                        status_code=503)


@router.get("/metrics")
async def metrics(state: State) -> Response:
    """Prometheus metrics (text format)."""
    body, content_type = render(state.engine.metrics.registry)
    return Response(body, media_type=content_type)
