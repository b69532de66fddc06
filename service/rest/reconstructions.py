"""``POST /v1/reconstructions``: an uploaded ISMRMRD file reconstructed now (the result in the format asked for,
with ``X-Mrdserve-*`` headers) or, with ``?mode=async``, spooled as a job (202 + id)."""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from mrdserve.models.data.baseline import METHODS
from mrdserve.service.engine.choice import Choice
from mrdserve.service.log import log_event
from mrdserve.service.outputs.formats import OutputFormat
from mrdserve.service.posterior import check_uncertainty
from mrdserve.service.rest.context import logger
from mrdserve.service.rest.deps import Jobs, State, only_query, require_api_key
from mrdserve.service.rest.errors import ApiError
from mrdserve.service.rest.jobs import accept_job
from mrdserve.service.rest.processing import (
    finish_request,
    ingest,
    package,
    push_to_pacs,
    reconstruct,
    result_headers,
)
from mrdserve.service.rest.state import ServiceState
from mrdserve.service.rest.upload import UPLOAD_FIELD, receive_upload

RECONSTRUCTION_PARAMETERS = ("format", "artifact", "group", "method", "mode", "uncertainty")
RECONSTRUCTION_QUERY = only_query(*RECONSTRUCTION_PARAMETERS)


class Mode(StrEnum):
    sync = "sync"
    async_ = "async"


ClassicalMethod = StrEnum("ClassicalMethod", {name.replace("-", "_"): name for name in METHODS})
AUTO_METHOD = ClassicalMethod("auto")

UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [UPLOAD_FIELD],
    "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary", "description": "ISMRMRD HDF5 file"}}}}}}}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the result file (zip for dicom/png, .nii.gz, .h5)"},
    202: {"description": "async job accepted"}, 413: {"description": "upload too large"},
    415: {"description": "not HDF5"}, 422: {"description": "bad ISMRMRD input"},
    503: {"description": "queue full (Retry-After) or not ready"}}

router = APIRouter()


@router.post("/v1/reconstructions", dependencies=[Depends(require_api_key), Depends(RECONSTRUCTION_QUERY)],
             openapi_extra=UPLOAD_BODY, responses=RESPONSES)
async def create_reconstruction(
    request: Request,
    state: State,
    runner: Jobs,
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
    uncertainty: Annotated[int, Query(description="posterior samples per slice (DSM prior) for a posterior-mean "
                                                  "and a standard-deviation series beside the images; slow: "
                                                  "with mode=async only; 0: none")] = 0,
) -> Response:
    """Reconstruct an uploaded ISMRMRD file and return the images in the format asked for."""
    params = {"format": format.value, "artifact": artifact, "group": group, "method": method.value,
              "uncertainty": _uncertainty(state, uncertainty, mode)}
    limit = state.config.upload_max_bytes
    too_large = ApiError(413, "too_large", f"the upload is larger than the limit of {limit} bytes "
                                           f"(upload_max_bytes)", {"Connection": "close"})
    if mode is Mode.async_:  # spooled jobs are accepted while warming up; they run once ready
        return await accept_job(state, runner, request, params, too_large)
    state.check_ready()
    return await reconstruct_now(state, request, params, too_large)


def _uncertainty(state: ServiceState, n_samples: int, mode: Mode) -> int:
    """The number of posterior samples asked for, checked before the upload is read (422 naming the fix)."""
    try:
        n_samples = check_uncertainty(n_samples)
        if n_samples:
            state.engine.check_uncertainty(n_samples)  # a score prior is configured
    except ValueError as error:
        raise ApiError(422, "invalid_request", str(error)) from None
    if n_samples and mode is not Mode.async_:
        raise ApiError(422, "invalid_request", "uncertainty: posterior sampling takes minutes per slice; ask for it "
                                               "with mode=async and poll the job (its status shows the progress)")
    return n_samples


async def reconstruct_now(state: ServiceState, request: Request, params: dict[str, Any],
                          too_large: ApiError) -> Response:
    """Receive, read, reconstruct and package the upload while the client waits; its files go after the
    response (or at once on an error)."""
    fmt, config = params["format"], state.config
    started = time.perf_counter()
    work_dir = state.work_root / uuid.uuid4().hex
    work_dir.mkdir(parents=True)
    results = None
    try:
        upload = work_dir / "input.h5"
        await receive_upload(request, upload, config.upload_max_bytes, too_large)
        header, samples = await state.cpu_bound(ingest, upload, params["group"], config.budget)
        ingested = time.perf_counter()
        choice = Choice.of(params["artifact"], params["method"])
        results = await reconstruct(state, samples, choice, request.is_disconnected)
        reconstructed = time.perf_counter()
        packaged = await state.cpu_bound(package, results, header, fmt, work_dir / "out")
        finished = time.perf_counter()
    except ApiError as error:
        finish_request(work_dir)
        state.count(results, "rejected" if error.status < 500 or error.status == 503 else "failed")
        raise
    except BaseException:
        finish_request(work_dir)
        raise
    headers = _record(state, results, fmt, (started, ingested, reconstructed, finished))
    pushed = await push_to_pacs(state, packaged, fmt)
    if pushed is not None:
        headers["X-Mrdserve-Pacs"] = pushed.header()
    return FileResponse(packaged.path, media_type=packaged.media_type, filename=packaged.filename,
                        headers=headers, background=BackgroundTask(finish_request, work_dir))


def _record(state: ServiceState, results: list[Any], fmt: str,
            times: tuple[float, float, float, float]) -> dict[str, str]:
    """Observe the stage times, count and log the request; the result headers with ``X-Mrdserve-Timings``."""
    started, ingested, reconstructed, finished = times
    metrics = state.engine.metrics
    metrics.observe_stage("ingest", ingested - started)
    metrics.observe_stage("output", finished - reconstructed)
    metrics.observe_stage("total", finished - started)
    state.count(results, "ok")
    log_event(logger, "reconstructed", slices=len(results), format=fmt, labels=sorted({r.label for r in results}),
              total_ms=round(1000 * (finished - started), 2))
    headers = result_headers(results)
    headers["X-Mrdserve-Timings"] = (f"ingest={ingested - started:.4f};reconstruct={reconstructed - ingested:.4f};"
                                     f"output={finished - reconstructed:.4f}")
    return headers
