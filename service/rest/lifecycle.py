"""The app's lifespan: own the spool, start the engine (ready then, recovered jobs queued), expire old results,
run the job workers and the file readers' forkserver; at the end stop them, the engine, and give the spool up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from mrdserve.service import bounded_read
from mrdserve.service.log import log_event
from mrdserve.service.rest.context import logger
from mrdserve.service.rest.job_runner import JobRunner
from mrdserve.service.rest.state import ServiceState

EXPIRY_INTERVAL_S = 60.0


async def start_engine(state: ServiceState, runner: JobRunner) -> None:
    """Start the engine; ready then, with the jobs a previous process left queued. A failure is reported by
    ``/readyz`` and the log, and the process stays up."""
    try:
        await state.engine.start()
    except Exception as error:  # reported by /readyz and the log, the process stays up
        state.start_error = str(error)
        log_event(logger, "engine_start_failed", logging.ERROR, reason=str(error))
        return
    state.ready.set()
    runner.recover()
    log_event(logger, "ready", models=len(state.engine.models()))


async def expire_results(state: ServiceState) -> None:
    """Every ``EXPIRY_INTERVAL_S``, delete the finished jobs past their time-to-live."""
    while True:
        await asyncio.sleep(EXPIRY_INTERVAL_S)
        removed = await run_in_threadpool(state.spool.expire)
        if removed:
            log_event(logger, "jobs_expired", count=removed)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The service behind ``app`` (``app.state.service`` and ``app.state.jobs``) while the app runs."""
    state: ServiceState = app.state.service
    runner: JobRunner = app.state.jobs
    state.spool.acquire()  # SpoolInUseError: another instance runs these jobs; refuse to start
    shutil.rmtree(state.work_root, ignore_errors=True)
    state.work_root.mkdir(parents=True, exist_ok=True)
    background = [asyncio.create_task(start_engine(state, runner)), asyncio.create_task(expire_results(state)),
                  asyncio.create_task(run_in_threadpool(bounded_read.start))]  # the file readers' forkserver
    background += [asyncio.create_task(runner.work()) for _ in range(max(1, state.config.max_batch))]
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await state.engine.shutdown()
        state.spool.release()
        log_event(logger, "stopped")
