"""Asynchronous jobs: accepting an upload into the spool (202 + id), and ``GET /v1/reconstructions/{id}`` and
``.../result`` reporting and delivering it (kept until ``result_ttl_s`` after it finished, ``Range`` honoured)."""

from __future__ import annotations

from typing import Any

import h5py
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from mrdserve.service.log import log_event
from mrdserve.service.rest.context import logger
from mrdserve.service.rest.deps import GUARDED, State
from mrdserve.service.rest.errors import ApiError
from mrdserve.service.rest.job_runner import JobRunner
from mrdserve.service.rest.state import ServiceState
from mrdserve.service.rest.upload import receive_upload
from mrdserve.service.spool import FAILED, SUCCEEDED, SpoolFullError

SPOOL_RETRY_AFTER = "60"  # seconds a client waits before offering a job to a full spool again

router = APIRouter()


async def accept_job(state: ServiceState, runner: JobRunner, request: Request, params: dict[str, Any],
                     too_large: ApiError) -> JSONResponse:
    """Spool the upload as a job with ``params`` and queue it: 202 with its id and URLs; 507 when the spool is
    full, 415 when the upload is not HDF5."""
    config, spool = state.config, state.spool
    incoming = spool.incoming_path()
    try:
        room = await run_in_threadpool(spool.room)
        if room <= 0:
            raise SpoolFullError(f"the job spool is full ({config.spool_max_bytes} bytes); fetch or wait for "
                                 f"finished results to expire, or retry later")
        spool_full = ApiError(507, "spool_full", f"the upload does not fit in the job spool ({room} bytes free "
                                                 f"of {config.spool_max_bytes}); retry later",
                              {"Retry-After": SPOOL_RETRY_AFTER, "Connection": "close"})
        limit = min(config.upload_max_bytes, room)
        await receive_upload(request, incoming, limit, too_large if limit == config.upload_max_bytes else spool_full)
        if not h5py.is_hdf5(incoming):
            raise ApiError(415, "not_hdf5", "the upload is not an HDF5 file; send an ISMRMRD HDF5 file (.h5)")
        job = spool.create(incoming, params)
    except SpoolFullError as error:
        raise ApiError(507, "spool_full", str(error), {"Retry-After": SPOOL_RETRY_AFTER}) from error
    finally:
        incoming.unlink(missing_ok=True)
    runner.submit(job.id)
    log_event(logger, "job_accepted", job_id=job.id)
    return JSONResponse({"id": job.id, "state": job.state, "status_url": f"/v1/reconstructions/{job.id}",
                         "result_url": f"/v1/reconstructions/{job.id}/result"}, status_code=202,
                        headers={"Location": f"/v1/reconstructions/{job.id}"})


@router.get("/v1/reconstructions/{job_id}", dependencies=GUARDED)
async def job_status(job_id: str, state: State) -> dict[str, Any]:
    """The state of an asynchronous job: queued, running, succeeded (result ready) or failed (with reason)."""
    job = state.spool.get(job_id)
    if job is None:
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (unknown, or expired after "
                                           f"{state.config.result_ttl_s:g} s)")
    return job.public()


@router.get("/v1/reconstructions/{job_id}/result", dependencies=GUARDED)
async def job_result(job_id: str, state: State) -> Response:
    """The result of a finished job, kept until it expires (``result_ttl_s`` after the job finished), so a
    broken download can be retried; ``Range`` requests are honoured."""
    spool = state.spool
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
