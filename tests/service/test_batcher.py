"""Dynamic batcher with a fake runner: batch composition, back-pressure, timeouts, cancellation, draining, and a
poisoned job that fails alone. No timing assertions: only which jobs ran together and what each got back."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mrdserve.service.engine.batcher import Batcher, QueueFullError, ReconstructionError, ShuttingDownError
from mrdserve.service.metrics import ServiceMetrics


class FakeRunner:
    """Records every batch; doubles numbers; raises on "poison"; can be held until released."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, payloads: list) -> list:
        self.started.set()
        self.gate.wait(10)
        self.batches.append(list(payloads))
        if "poison" in payloads:
            raise RuntimeError("cannot reconstruct poison")
        return [2 * p for p in payloads]


async def _until(condition, steps: int = 500) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_concurrent_jobs_run_in_fewer_batches_up_to_max_batch():
    runner = FakeRunner()

    async def scenario():
        batcher = Batcher("fake", runner, max_batch=3, max_wait_s=5.0, queue_size=32)
        results = await asyncio.gather(*(batcher.submit(i, key="same") for i in range(7)))
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert [r.value for r in results] == [2 * i for i in range(7)]
    assert all(len(batch) <= 3 for batch in runner.batches)
    assert len(runner.batches) == 3  # 3 + 3 + 1: full batches leave at once, the last one on close/deadline
    assert sorted(p for batch in runner.batches for p in batch) == list(range(7))
    assert [r.batch_size for r in results] == [3, 3, 3, 3, 3, 3, 1]


def test_only_compatible_jobs_share_a_batch_and_a_lone_job_leaves_after_max_wait():
    runner = FakeRunner()

    async def scenario():
        batcher = Batcher("fake", runner, max_batch=4, max_wait_s=0.02, queue_size=32)
        jobs = [batcher.submit(i, key=("shape", i % 2)) for i in range(6)]
        results = await asyncio.gather(*jobs)
        lone = await batcher.submit(100, key="alone")  # never fills a batch: the deadline sends it
        await batcher.close()
        return results, lone

    results, lone = asyncio.run(scenario())
    assert [r.value for r in results] == [0, 2, 4, 6, 8, 10] and lone.value == 200
    for batch in runner.batches:
        assert len({p % 2 for p in batch}) == 1, f"mixed shapes in one batch: {batch}"
    assert runner.batches[-1] == [100]


def test_full_queue_raises_with_retry_after_and_metrics_follow_depth():
    runner = FakeRunner()
    runner.gate.clear()
    metrics = ServiceMetrics()

    async def scenario():
        batcher = Batcher("fake", runner, max_batch=1, max_wait_s=0.0, queue_size=2, metrics=metrics)
        running = asyncio.ensure_future(batcher.submit(0))
        await _until(runner.started.is_set)  # job 0 holds the worker
        waiting = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
        await _until(lambda: batcher.depth == 2)
        depth = metrics.sample_value("mrdserve_queue_depth", {"artifact": "fake"})
        with pytest.raises(QueueFullError) as caught:
            await batcher.submit(3)
        runner.gate.set()
        done = await asyncio.gather(running, *waiting)
        await batcher.close()
        return caught.value, depth, done

    error, depth, done = asyncio.run(scenario())
    assert error.retry_after_s >= 1 and "full" in str(error)
    assert depth == 2 and [r.value for r in done] == [0, 2, 4]
    assert metrics.sample_value("mrdserve_batch_size_count", {"artifact": "fake"}) == 3


def test_timeout_withdraws_the_job_and_others_still_run():
    runner = FakeRunner()
    runner.gate.clear()

    async def scenario():
        batcher = Batcher("fake", runner, max_batch=1, max_wait_s=0.0, queue_size=8)
        blocker = asyncio.ensure_future(batcher.submit(1))
        await _until(runner.started.is_set)
        with pytest.raises(TimeoutError, match="did not finish within"):
            await batcher.submit(2, timeout_s=0.05)
        depth_after_timeout = batcher.depth
        runner.gate.set()
        first = await blocker
        await batcher.close()
        return depth_after_timeout, first

    depth, first = asyncio.run(scenario())
    assert depth == 0 and first.value == 2
    assert [1] in runner.batches and [2] not in runner.batches  # the timed-out job never ran


def test_cancelled_waiting_job_is_removed_and_never_runs():
    runner = FakeRunner()
    runner.gate.clear()

    async def scenario():
        batcher = Batcher("fake", runner, max_batch=1, max_wait_s=0.0, queue_size=8)
        blocker = asyncio.ensure_future(batcher.submit("a"))
        await _until(runner.started.is_set)
        doomed = asyncio.ensure_future(batcher.submit("b"))
        kept = asyncio.ensure_future(batcher.submit("c"))
        await _until(lambda: batcher.depth == 2)
        doomed.cancel()
        await asyncio.sleep(0)
        depth = batcher.depth
        runner.gate.set()
        results = await asyncio.gather(blocker, kept)
        await batcher.close()
        return depth, [r.value for r in results], doomed.cancelled()

    depth, values, cancelled = asyncio.run(scenario())
    assert cancelled and depth == 1 and values == ["aa", "cc"]
    assert ["b"] not in runner.batches


def test_close_drains_every_accepted_job_then_refuses_new_ones():
    runner = FakeRunner()

    async def scenario():
        batcher = Batcher("fake", runner, max_batch=2, max_wait_s=60.0, queue_size=16)
        jobs = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await _until(lambda: batcher.depth + sum(len(b) for b in runner.batches) == 5)
        await batcher.close()  # the 60 s wait must not hold the drain back
        assert sum(len(b) for b in runner.batches) == 5  # all ran before close returned
        values = [(await job).value for job in jobs]
        with pytest.raises(ShuttingDownError):
            await batcher.submit(9)
        return values

    assert asyncio.run(scenario()) == [0, 2, 4, 6, 8]


def test_poisoned_job_fails_alone_and_its_batch_mates_succeed():
    runner = FakeRunner()

    async def scenario():
        batcher = Batcher("fake", runner, max_batch=4, max_wait_s=5.0, queue_size=16)
        outcomes = await asyncio.gather(*(batcher.submit(p) for p in (1, "poison", 3, 4)), return_exceptions=True)
        await batcher.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert [o.value for i, o in enumerate(outcomes) if i != 1] == [2, 6, 8]
    assert isinstance(outcomes[1], ReconstructionError) and "cannot reconstruct poison" in str(outcomes[1])
    assert runner.batches[0] == [1, "poison", 3, 4]  # the batch ran once, then job by job
    assert runner.batches[1:] == [[1], ["poison"], [3], [4]]


def test_withdrawing_a_tensor_job_behind_another_neither_raises_nor_runs_it():
    """Jobs are compared by identity: a tensor payload's ``==`` would be ambiguous (it once raised here)."""
    import torch

    runner_batches: list[int] = []
    gate = threading.Event()

    def run(payloads: list) -> list:
        gate.wait(10)
        runner_batches.append(len(payloads))
        return [p.sum().item() for p in payloads]

    async def scenario():
        batcher = Batcher("fake", run, max_batch=1, max_wait_s=0.0, queue_size=8)
        running = asyncio.ensure_future(batcher.submit(torch.ones(3)))
        await _until(lambda: batcher.depth == 0)
        ahead = asyncio.ensure_future(batcher.submit(torch.ones(3)))
        behind = asyncio.ensure_future(batcher.submit(torch.ones(3), timeout_s=0.05))
        await _until(lambda: batcher.depth == 2)
        with pytest.raises(TimeoutError, match="did not finish within"):
            await behind
        depth = batcher.depth
        gate.set()
        values = [r.value for r in await asyncio.gather(running, ahead)]
        await batcher.close()
        return depth, values

    depth, values = asyncio.run(scenario())
    assert depth == 1 and values == [3.0, 3.0] and runner_batches == [1, 1]
