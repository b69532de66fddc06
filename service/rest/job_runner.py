"""The runner of asynchronous jobs: worker tasks take spooled jobs once the engine is ready, reconstruct them
(waiting for room when the engine's queue is full), keep the result in the spool, and requeue the jobs that a
shutdown interrupted so that they run after the restart."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.engine.batcher import QueueFullError
from mrdserve.service.engine.choice import Choice
from mrdserve.service.log import log_event, request_id_var
from mrdserve.service.rest.context import logger
from mrdserve.service.rest.errors import ApiError
from mrdserve.service.rest.processing import (
    ENGINE_ERRORS,
    engine_error,
    finish_request,
    ingest,
    package,
    push_to_pacs,
    result_summary,
    run_engine,
)
from mrdserve.service.rest.state import ServiceState
from mrdserve.service.spool import FAILED, SUCCEEDED, Job

MIN_RETRY_S = 1.0  # a job waits at least this long before asking a full queue again


class JobRunner:
    """Runs the jobs of ``state.spool``: ``submit`` queues a job id, each ``work()`` task runs one job at a time."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def submit(self, job_id: str) -> None:
        """Queue an accepted job to run (once the engine is ready)."""
        self._queue.put_nowait(job_id)

    def recover(self) -> None:
        """Queue the jobs a previous process left queued or running (``JobSpool.recover``)."""
        for job in self.state.spool.recover():
            log_event(logger, "job_recovered", job_id=job.id, attempts=job.attempts)
            self.submit(job.id)

    async def work(self) -> None:
        """A worker: once ready, run queued jobs one at a time until the shutdown drains the service."""
        state = self.state
        await state.ready.wait()
        while not state.draining:
            job_id = await self._queue.get()
            if state.draining:
                return  # left queued in the spool: it runs after the restart
            job = state.spool.get(job_id)
            if job is None or job.state in (SUCCEEDED, FAILED):
                continue
            await self.run(job)

    async def run(self, job: Job) -> None:
        """Run one job to success or failure; one job's failure never stops the worker."""
        token = request_id_var.set(f"job-{job.id[:12]}")
        work_dir = self.state.work_root / f"job-{job.id}"
        job = self.state.spool.mark_running(job)
        try:
            await self._execute(job, work_dir)
        except asyncio.CancelledError:
            self.state.spool.requeue(job)
            raise
        except Exception as error:  # one job's failure must not stop the worker
            self._fail(job, error)
        finally:
            finish_request(work_dir)
            request_id_var.reset(token)

    async def _execute(self, job: Job, work_dir: Path) -> None:
        state, params = self.state, job.params
        work_dir.mkdir(parents=True, exist_ok=True)
        fmt = params.get("format", "dicom")
        started = time.perf_counter()
        header, samples = await state.cpu_bound(ingest, state.spool.input_path(job), params.get("group", "dataset"),
                                                state.config.budget)
        ingested = time.perf_counter()
        results = await self._reconstruct(samples, params)
        reconstructed = time.perf_counter()
        packaged = await state.cpu_bound(package, results, header, fmt, work_dir)
        pushed = await push_to_pacs(state, packaged, fmt)
        summary = result_summary(results, {"ingest": ingested - started, "reconstruct": reconstructed - ingested,
                                           "output": time.perf_counter() - reconstructed})
        state.spool.mark_succeeded(job, Path(packaged.path), packaged.media_type, packaged.filename, len(results),
                                   pacs=None if pushed is None else pushed.public(), summary=summary)
        state.count(results, "ok")
        log_event(logger, "job_succeeded", job_id=job.id, slices=len(results))

    async def _reconstruct(self, samples: list[KSpaceSample], params: dict[str, Any]) -> list[Any]:
        """The engine's results; accepted work waits for room in a full queue instead of failing."""
        while True:
            try:
                choice = Choice.of(params.get("artifact"), params.get("method", "auto"))
                return await run_engine(self.state, samples, choice)
            except QueueFullError as full:
                await asyncio.sleep(max(MIN_RETRY_S, full.retry_after_s))
            except ENGINE_ERRORS as error:
                raise engine_error(error) from error

    def _fail(self, job: Job, error: Exception) -> None:
        """Record why a job failed, or requeue it when the shutdown (not the job) interrupted it."""
        state = self.state
        if state.draining and not (isinstance(error, ApiError) and error.status < 500):
            state.spool.requeue(job)  # interrupted by the shutdown, not failed: it runs after the restart
        elif isinstance(error, ApiError):
            state.spool.mark_failed(job, error.message, error.status)
            state.count(None, "rejected" if error.status < 500 else "failed")
            log_event(logger, "job_failed", logging.WARNING, job_id=job.id, status=error.status, code=error.code)
        else:
            state.spool.mark_failed(job, f"internal error while running the job: {type(error).__name__}", 500)
            state.count(None, "failed")
            logger.exception("job_crashed", extra={"event": "job_crashed", "job_id": job.id})
