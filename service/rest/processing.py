"""The steps a synchronous request and an asynchronous job share: read the upload into samples, run the engine
(its errors as API errors), package the results, push DICOM to the PACS, and clean up after."""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from mrdserve.models.data.input_errors import InputError
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service import bounded_read
from mrdserve.service.admission import Budget
from mrdserve.service.engine.batcher import QueueFullError, ReconstructionError
from mrdserve.service.engine.choice import Choice
from mrdserve.service.log import log_event, request_id_var
from mrdserve.service.memory import release_memory
from mrdserve.service.outputs.formats import OutputFormat
from mrdserve.service.pacs import PushReport, dicom_files_in_zip, push
from mrdserve.service.rest.context import logger
from mrdserve.service.rest.errors import ApiError, input_error
from mrdserve.service.rest.state import ServiceState

# What the engine raises that a client caused or may retry; anything else is a bug of ours (500 internal_error).
ENGINE_ERRORS = (QueueFullError, ReconstructionError, TimeoutError, ValueError)


def ingest(path: Path, group: str, budget: Budget) -> tuple[Any, list[KSpaceSample]]:
    """Read an uploaded ISMRMRD file into samples, admitted by its declared sizes first, in a bounded child
    process (``service.bounded_read``); ``ApiError`` (4xx) naming what is wrong."""
    try:
        return bounded_read.read_bounded(path, group, budget)
    except InputError as error:
        raise input_error(error, str(path)) from None


def package(results: list[Any], header: Any, fmt: str, work_dir: Path) -> Any:
    """The results as one file in ``fmt`` (``service.outputs.package``), imported when first needed."""
    from mrdserve.service.outputs.package import package_results
    return package_results(results, header, fmt, work_dir)


def finish_request(work_dir: Path) -> None:
    """After a response: its files go, and the C heap gives the request's memory back to the system."""
    shutil.rmtree(work_dir, ignore_errors=True)
    release_memory()


async def run_engine(state: ServiceState, samples: list[KSpaceSample], choice: Choice,
                     disconnected: Callable[[], Awaitable[bool]] | None = None) -> list[Any]:
    """The engine's reconstruction, counted in flight and cancelled when the client goes away (``disconnected``);
    the engine's errors are raised as they are."""
    engine = state.engine
    task = asyncio.ensure_future(engine.reconstruct(samples, choice, request_id=request_id_var.get()))
    engine.metrics.inflight_requests.inc()
    try:
        while disconnected is not None and not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await disconnected():
                task.cancel()
                log_event(logger, "client_disconnected")
        return await task
    finally:
        engine.metrics.inflight_requests.dec()
        if not task.done():
            task.cancel()


def engine_error(error: Exception) -> ApiError:
    """The API error for one of ``ENGINE_ERRORS``: 503 queue full (Retry-After), 500, 504 or 422."""
    if isinstance(error, QueueFullError):
        retry = max(1, math.ceil(error.retry_after_s))
        return ApiError(503, "queue_full", f"{error}; retry after {retry} s", {"Retry-After": str(retry)})
    if isinstance(error, ReconstructionError):
        return ApiError(500, "reconstruction_failed", f"the reconstruction failed: {error}")
    if isinstance(error, TimeoutError):
        return ApiError(504, "timeout", str(error) or "the reconstruction timed out")
    return ApiError(422, "invalid_request", str(error))


async def reconstruct(state: ServiceState, samples: list[KSpaceSample], choice: Choice,
                      disconnected: Callable[[], Awaitable[bool]] | None = None) -> list[Any]:
    """``run_engine`` with its errors as API errors; a request cut by the shutdown's grace period is answered
    503 (retry) instead of being dropped."""
    try:
        return await run_engine(state, samples, choice, disconnected)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not state.draining or current is None:
            raise
        current.uncancel()  # cut by the shutdown's grace period: answer instead of dropping the request
        raise ApiError(503, "shutting_down", "the service is shutting down and could not finish this "
                                             "reconstruction; retry it", {"Retry-After": "5"}) from None
    except ENGINE_ERRORS as error:
        raise engine_error(error) from error


async def push_to_pacs(state: ServiceState, packaged: Any, fmt: str) -> PushReport | None:
    """Push a DICOM result when a PACS is configured; counted and logged (no patient data), never raises."""
    target = state.pacs_target
    if target is None or fmt != OutputFormat.dicom.value:
        return None
    try:
        files = await run_in_threadpool(dicom_files_in_zip, Path(packaged.path))
        report = await run_in_threadpool(push, files, target)
    except Exception as error:
        report = PushReport(target.protocol, 0, error=f"{type(error).__name__} while reading the result")
    state.engine.metrics.pacs_push.labels(protocol=report.protocol, outcome=report.outcome).inc()
    log_event(logger, "pacs_push", logging.INFO if report.outcome == "ok" else logging.WARNING,
              protocol=report.protocol, outcome=report.outcome, instances=report.instances, stored=report.stored,
              reason=report.error)
    return report


def result_summary(results: list[Any], stages_s: dict[str, float]) -> dict[str, Any]:
    """What made a request's images (labels, fallback reasons) and its times: the request's stages and, per
    slice, the engine's (preparation, queue, inference) mean, in milliseconds."""
    per_slice: dict[str, list[float]] = {}
    for result in results:
        for stage, seconds in result.timings.items():
            per_slice.setdefault(stage, []).append(seconds)
    return {"labels": sorted({r.label for r in results}),
            "fallback": sorted({r.fallback_reason for r in results if r.fallback_reason}),
            "request_ms": {stage: round(1000 * s, 2) for stage, s in stages_s.items()},
            "per_slice_ms": {stage: round(1000 * sum(v) / len(v), 2) for stage, v in per_slice.items()}}


def result_headers(results: list[Any]) -> dict[str, str]:
    """``X-Mrdserve-Slices``, ``-Labels`` and, where the classical path stood in, ``-Fallback`` (ASCII, bounded)."""
    labels = sorted({str(r.label) for r in results})
    headers = {"X-Mrdserve-Slices": str(len(results)), "X-Mrdserve-Labels": ",".join(labels)}
    fallbacks = sorted({r.fallback_reason for r in results if r.fallback_reason})
    if fallbacks:
        headers["X-Mrdserve-Fallback"] = "; ".join(fallbacks).encode("ascii", "replace").decode()[:500]
    return headers
