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
PROGRESS_EVERY_S = 1.0  # how often a job's status records the progress of its posterior sampling


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
        n_samples = int(params.get("uncertainty") or 0)
        if n_samples:
            try:
                state.engine.check_uncertainty(n_samples, samples=samples)  # 2D data, before any work
            except ValueError as error:
                raise ApiError(422, "invalid_request", str(error)) from None
        results = await self._reconstruct(samples, params)
        reconstructed = time.perf_counter()
        await self._add_uncertainty(job, results, n_samples)
        sampled = time.perf_counter()
        packaged = await state.cpu_bound(package, results, header, fmt, work_dir)
        pushed = await push_to_pacs(state, packaged, fmt)
        stages = {"ingest": ingested - started, "reconstruct": reconstructed - ingested}
        if n_samples:
            stages["uncertainty"] = sampled - reconstructed
        summary = result_summary(results, {**stages, "output": time.perf_counter() - sampled})
        failed_maps = sorted({r.posterior_error for r in results if r.posterior_error})
        if failed_maps:
            summary["uncertainty_errors"] = failed_maps
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

    async def _add_uncertainty(self, job: Job, results: list[Any], n_samples: int) -> None:
        """Posterior mean and standard-deviation maps for every slice, the job's progress kept in its status."""
        if not n_samples:
            return
        loop, spool = asyncio.get_running_loop(), self.state.spool
        spool.mark_progress(job, "uncertainty", 0.0)
        reported = [0.0, time.monotonic()]

        def progress(fraction: float) -> None:  # from the sampling thread: a small status write, at most 1/s
            if fraction >= 1.0 or time.monotonic() - reported[1] >= PROGRESS_EVERY_S:
                reported[:] = [fraction, time.monotonic()]
                loop.call_soon_threadsafe(spool.mark_progress, job, "uncertainty", fraction)

        await self.state.engine.add_uncertainty(results, n_samples, progress)  # a slice's failure is kept in it

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
