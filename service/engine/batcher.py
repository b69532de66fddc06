"""Dynamic batching for one artifact: jobs wait in a bounded asyncio queue and run in batches of compatible jobs.

A batch starts with the oldest waiting job and takes the following jobs with the same key (input shapes),
up to ``max_batch``; it runs as soon as it is full or ``max_wait_s`` after the oldest job arrived. Batches run
one at a time in a single worker thread (torch releases the GIL), so the event loop stays responsive. A batch
that raises is retried job by job, so one poisoned input fails alone. A job whose awaiting task is cancelled or
times out leaves the queue without running; ``close()`` runs every job accepted before it returns.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mrdserve.service.metrics import ServiceMetrics


class QueueFullError(RuntimeError):
    """The queue of an artifact is full (back-pressure): retry after ``retry_after_s`` seconds (HTTP 503)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = float(retry_after_s)


class ShuttingDownError(QueueFullError):
    """The engine is shutting down and accepts no new work (also a 503)."""


class ReconstructionError(RuntimeError):
    """A reconstruction failed; the message is safe to show to the client (no data, no stack)."""


MAX_ERROR_CHARS = 300


def failure(what: str, error: Exception) -> ReconstructionError:
    """A ``ReconstructionError`` saying ``what`` failed, safe to show a client (type and a bounded message)."""
    wrapped = ReconstructionError(f"{what} failed: {type(error).__name__}: {str(error)[:MAX_ERROR_CHARS]}")
    wrapped.__cause__ = error
    return wrapped


@dataclass
class Completed:
    """A finished job: its value and how long it queued and ran (seconds), and the size of its batch."""

    value: Any
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass(eq=False)  # identity: comparing payloads (tensors) would be ambiguous and slow
class _Job:
    payload: Any
    key: Hashable
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """A per-artifact queue feeding ``run_batch(payloads) -> values`` (same order) in one worker thread."""

    def __init__(self, name: str, run_batch: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 4,
                 max_wait_s: float = 0.01, queue_size: int = 64, metrics: ServiceMetrics | None = None) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch and queue_size must be >= 1 and max_wait_s >= 0, got {max_batch}, "
                             f"{queue_size}, {max_wait_s}")
        self.name = name
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self.metrics = metrics
        self.batches_run = 0
        self._queue: deque[_Job] = deque()
        self._wake: asyncio.Event | None = None
        self._consumer: asyncio.Task | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        self._batch_seconds = 0.05  # running mean of a batch's run time, for Retry-After

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet running)."""
        return len(self._queue)

    def run_in_worker(self, function: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Run ``function(*args)`` in this artifact's inference thread (e.g. the warm-up), awaitable."""
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def retry_after_s(self) -> float:
        """A guess of when a slot frees up: the waiting batches times the mean batch time, at least 1 s."""
        return float(max(1, math.ceil((self.depth / self.max_batch + 1) * self._batch_seconds)))

    async def submit(self, payload: Any, key: Hashable = None, timeout_s: float | None = None) -> Completed:
        """Queue a job and wait for it; QueueFullError when full, TimeoutError after ``timeout_s``."""
        if self._closing:
            raise ShuttingDownError(f"artifact {self.name} is shutting down; not accepting new work", 5.0)
        if self.depth >= self.queue_size:
            raise QueueFullError(f"the queue of artifact {self.name} is full ({self.queue_size} jobs waiting); "
                                 f"retry later", self.retry_after_s())
        self._ensure_consumer()
        job = _Job(payload, key, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._depth_changed()
        self._wake.set()  # type: ignore[union-attr]
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout_s)
        except TimeoutError:
            self._withdraw(job)
            raise TimeoutError(f"reconstruction did not finish within {timeout_s:g} s") from None
        except asyncio.CancelledError:
            self._withdraw(job)
            raise

    async def close(self) -> None:
        """Stop accepting work, run every job already accepted, then stop the worker thread."""
        self._closing = True
        if self._consumer is not None:
            self._wake.set()  # type: ignore[union-attr]
            await self._consumer
        self._executor.shutdown(wait=True)

    def _ensure_consumer(self) -> None:
        if self._consumer is None or self._consumer.done():
            self._wake = self._wake or asyncio.Event()
            self._consumer = asyncio.get_running_loop().create_task(self._consume(), name=f"batcher-{self.name}")

    def _withdraw(self, job: _Job) -> None:
        """Remove a job nobody waits for any more (it will not run if it has not started)."""
        if job in self._queue:
            self._queue.remove(job)
            self._depth_changed()
        if not job.future.done():
            job.future.cancel()

    def _depth_changed(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(artifact=self.name).set(self.depth)

    def _compatible(self, key: Hashable) -> int:
        return sum(1 for job in self._queue if job.key == key)

    async def _consume(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                wake.clear()
                await wake.wait()
                continue
            first = self._queue[0]
            deadline = first.enqueued + self.max_wait_s
            while not self._closing and self._compatible(first.key) < self.max_batch and first in self._queue:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), remaining)
                except TimeoutError:
                    break
            if not self._queue or self._queue[0] is not first:
                continue  # the oldest job was withdrawn meanwhile: start over
            batch = [job for job in self._queue if job.key == first.key][: self.max_batch]
            for job in batch:
                self._queue.remove(job)
            self._depth_changed()
            await self._run(batch)

    async def _run(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(self._executor, self._execute, [job.payload for job in batch])
        elapsed = time.perf_counter() - started
        self.batches_run += 1
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
        if self.metrics is not None:
            self.metrics.batch_size.labels(artifact=self.name).observe(len(batch))
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            if job.future.done():  # withdrawn while running: nobody waits for it
                continue
            if ok:
                job.future.set_result(Completed(value, started - job.enqueued, elapsed, len(batch)))
            else:
                job.future.set_exception(value)

    def _execute(self, payloads: list[Any]) -> list[tuple[bool, Any]]:
        """Run a batch in the worker thread; if it raises, run its jobs one by one so a bad one fails alone."""
        try:
            values = list(self.run_batch(payloads))
            if len(values) != len(payloads):
                raise RuntimeError(f"run_batch returned {len(values)} values for {len(payloads)} jobs")
            return [(True, value) for value in values]
        except Exception as error:  # any failure is isolated per job below
            if len(payloads) == 1:
                return [(False, self._failure(error))]
        outcomes: list[tuple[bool, Any]] = []
        for payload in payloads:
            try:
                outcomes.append((True, self.run_batch([payload])[0]))
            except Exception as error:
                outcomes.append((False, self._failure(error)))
        return outcomes

    def _failure(self, error: Exception) -> ReconstructionError:
        """``error`` as the client sees it: "reconstruction with <artifact> failed: ..." (as the direct driver)."""
        return error if isinstance(error, ReconstructionError) else failure(f"reconstruction with {self.name}", error)
