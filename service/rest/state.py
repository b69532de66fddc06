"""What the routes, the job runner and the lifespan share while the app runs: the config, the engine, the job
spool, readiness, the shutdown drain and the CPU slots for reading uploads and packaging results."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from mrdserve.service.config import ServiceConfig
from mrdserve.service.pacs import PacsTarget
from mrdserve.service.rest.errors import ApiError
from mrdserve.service.spool import JobSpool


class ServiceState:
    """The running service behind one app: ``engine`` and ``spool`` from ``config``, ready once the engine has
    started, draining once shutdown has begun."""

    def __init__(self, config: ServiceConfig, engine: Any, spool: JobSpool) -> None:
        self.config, self.engine, self.spool = config, engine, spool
        self.work_root = Path(config.spool_dir) / "work"  # per-request and per-job files, emptied at each start
        self.pacs_target = PacsTarget.from_config(config)
        self.ready = asyncio.Event()
        self.start_error: str | None = None
        self.draining = False
        # Reading uploads and packaging results is CPU work: one slot per core keeps many concurrent requests from
        # oversubscribing the CPU that inference needs (16 clients on 2 cores lost a quarter of the throughput).
        self._cpu_slots = asyncio.Semaphore(os.cpu_count() or 1)

    async def cpu_bound(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in the thread pool, once a CPU slot is free."""
        async with self._cpu_slots:
            return await run_in_threadpool(function, *args)

    def check_ready(self) -> None:
        """503 (Retry-After) until the engine has started."""
        if not self.ready.is_set():
            reason = self.start_error or "the engine is loading and warming up its artifacts"
            raise ApiError(503, "not_ready", f"not ready: {reason}", {"Retry-After": "5"})

    def drain(self) -> None:
        """Shutdown has begun: no new jobs start; work cut by the shutdown is answered 503 / requeued."""
        self.draining = True

    def count(self, results: list[Any] | None, outcome: str) -> None:
        """Count a REST request (or job) per artifact label of its results (``none`` without results)."""
        labels = sorted({r.label for r in results}) if results else ["none"]
        for label in labels:
            self.engine.metrics.count_request("rest", label, outcome)
