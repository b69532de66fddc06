"""The reconstruction engine every entry point shares (REST, MRD server, gadget, ``mrdserve recon``).

``load()`` verifies the artifacts (and with ``preload`` loads each runner once on the device); ``start()`` creates
one dynamic batcher per artifact and warms each runner up with a synthetic sample; ``ready`` turns True after.
The per-sample steps are ``service.engine.pipeline``'s; this module holds their two drivers: ``reconstruct``
(asynchronous: preparation in worker threads, batched across requests) and ``reconstruct_sync`` (direct: batches
of ``max_batch`` in the calling thread, for ``mrdserve recon`` and benchmarks).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mrdserve.models.data.prepare import PreparedSample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.artifacts import Artifact, load_artifacts
from mrdserve.service.config import ServiceConfig
from mrdserve.service.engine.batcher import Batcher, QueueFullError, ReconstructionError, ShuttingDownError, failure
from mrdserve.service.engine.choice import AUTOMATIC, CLASSICAL, Choice, ChoiceMode
from mrdserve.service.engine.pipeline import Pipeline
from mrdserve.service.engine.plan import Plan, batch_key
from mrdserve.service.engine.result import ReconResult
from mrdserve.service.metrics import ServiceMetrics
from mrdserve.service.runners import default_runner_kind, resolve_device

__all__ = ["CLASSICAL", "Engine", "QueueFullError", "ReconstructionError", "ShuttingDownError"]

log = logging.getLogger("mrdserve.engine")


class Engine:
    """Artifacts, runners and batchers of one process; see the module docstring. ``preload=False`` loads a
    runner only when a sample first needs it (``mrdserve recon``: only the artifacts a file uses)."""

    def __init__(self, config: ServiceConfig | None = None, metrics: ServiceMetrics | None = None, *,
                 preload: bool = True) -> None:
        self.config = config or ServiceConfig()
        self.metrics = metrics or ServiceMetrics()
        self.device = resolve_device(self.config.device)
        self.runner_kind = (default_runner_kind(self.device) if self.config.runner == "auto"
                            else self.config.runner)
        self.preload = preload
        self.ready = False
        self.pipeline = Pipeline([], self.runner_kind, self.device, self.metrics, self.config.onnx_providers or None)
        self._batchers: dict[str, Batcher] = {}
        self._loaded = False
        workers = max(2, min(8, os.cpu_count() or 2))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mrdserve-prep")
        # the classical path has no batcher: new requests are refused (503) while this many of its slices wait or
        # run (a request admitted below the bound runs all its slices)
        self._classical_limit = self.config.queue_size + workers
        self._classical_inflight = 0
        self._posterior: Any = None  # service.posterior.PosteriorEstimator, made on first use (imports the sampler)
        self._posterior_lock = threading.Lock()
        # posterior sampling takes minutes: one thread of its own, so it never holds the preparation threads
        self._posterior_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrdserve-posterior")

    @property
    def artifacts(self) -> list[Artifact]:
        return self.pipeline.artifacts

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Verify the artifacts (and load their runners with ``preload``) once; blocking (``start`` runs it in a
        thread)."""
        if self._loaded:
            return
        artifacts = load_artifacts(self.config.artifacts)
        labels = [a.label for a in artifacts]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"artifact(s) {', '.join(duplicates)} found in more than one directory of "
                             f"{[str(p) for p in self.config.artifacts]}")
        self.pipeline.artifacts = artifacts
        for artifact in artifacts:
            if self.preload:
                self.pipeline.runner(artifact)
            self.metrics.artifact_info.labels(name=artifact.name, version=artifact.version,
                                              task=artifact.manifest.task, network=artifact.manifest.network).set(1)
        self._loaded = True
        log.info("loaded %d artifact(s) on %s with %s: %s", len(artifacts), self.device, self.runner_kind,
                 ", ".join(labels) or "none")

    async def start(self) -> None:
        """Load everything, create one batcher per artifact, warm each runner up in its own thread; then ready."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self.load)
        for artifact in self.artifacts:
            if artifact.label not in self._batchers:
                self._batchers[artifact.label] = Batcher(
                    artifact.label, self._batch_runner(artifact), max_batch=self.config.max_batch,
                    max_wait_s=self.config.max_wait_s, queue_size=self.config.queue_size, metrics=self.metrics)
        if self.config.warmup:
            await asyncio.gather(*(self._warm_up(a) for a in self.artifacts))
        self.ready = True

    async def _warm_up(self, artifact: Artifact) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            prepared = await loop.run_in_executor(self._pool, self.pipeline.prepare_synthetic, artifact)
            run = self._batch_runner(artifact)
            for _ in range(2):  # TorchScript's profiling executor optimises on the second call
                await self._batchers[artifact.label].run_in_worker(run, [prepared])
        except Exception as error:
            raise RuntimeError(f"warm-up of artifact {artifact.label} failed: {error}") from error
        log.info("warmed up %s in %.2f s", artifact.label, time.perf_counter() - started)

    async def shutdown(self) -> None:
        """Stop accepting work, finish every accepted job, release the threads."""
        self.ready = False
        await asyncio.gather(*(batcher.close() for batcher in self._batchers.values()))
        self._posterior_pool.shutdown(wait=False, cancel_futures=True)  # maps not started yet are not made
        self._pool.shutdown(wait=True)

    # -- introspection -----------------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """What ``GET /v1/models`` lists: one entry per loaded artifact (no paths outside the artifact name)."""
        entries = []
        for artifact in self.artifacts:
            manifest = artifact.manifest
            batcher = self._batchers.get(artifact.label)
            entries.append({
                "name": artifact.name, "version": artifact.version, "label": artifact.label,
                "network": manifest.network, "task": manifest.task,
                "preparation": manifest.preparation.name, "constraints": manifest.document["constraints"],
                "runner": self.runner_kind, "device": str(self.device),
                "intended_use": manifest.intended_use, "validation": manifest.validation,
                "queue_depth": batcher.depth if batcher is not None else 0,
            })
        return entries

    # -- reconstruction ----------------------------------------------------------------------------------------

    def plan(self, sample: KSpaceSample, choice: Choice = AUTOMATIC) -> Plan:
        """The artifact (or classical method and reason) for one sample; ValueError for an unknown or unfit name."""
        return self.pipeline.plan(sample, choice)

    def _plans(self, samples: Sequence[KSpaceSample], choice: Choice) -> list[Plan]:
        """Validate and plan every sample before any work starts (bad data and unfit names fail first)."""
        self.pipeline.validate(samples)
        return [self.plan(sample, choice) for sample in samples]

    async def reconstruct(self, samples: Sequence[KSpaceSample], choice: Choice = AUTOMATIC, *,
                          request_id: str = "", timeout_s: float | None = None) -> list[ReconResult]:
        """The asynchronous driver: reconstruct ``samples`` concurrently, batched with other requests; results in
        input order.

        Raises ValueError (unfit artifact, data the preparation rejects; an ``InputError`` for bad data),
        QueueFullError (back-pressure, 503), TimeoutError (after ``timeout_s``, default
        ``config.request_timeout_s``; ``math.inf``: none) and ReconstructionError.
        """
        if not self.ready:
            raise ShuttingDownError("the engine is not ready (loading artifacts or shutting down)", 5.0)
        plans = self._plans(samples, choice)
        classical = sum(1 for plan in plans if plan.artifact is None)
        if classical and self._classical_inflight >= self._classical_limit:
            raise QueueFullError(f"the classical reconstruction queue is full ({self._classical_inflight} slices "
                                 f"waiting or running); retry later", 1.0)
        self._classical_inflight += classical  # a request already admitted runs all its slices
        timeout = self.config.request_timeout_s if timeout_s is None else timeout_s
        tasks = [asyncio.ensure_future(self._reconstruct_one(s, p)) for s, p in zip(samples, plans, strict=True)]
        try:
            async with asyncio.timeout(None if math.isinf(timeout) else timeout):
                return list(await asyncio.gather(*tasks))
        except TimeoutError:
            raise TimeoutError(f"reconstruction did not finish within {timeout:g} s") from None
        finally:
            self._classical_inflight -= classical
            for task in tasks:  # one failing (or the caller going away) cancels the rest of the request
                task.cancel()

    async def _reconstruct_one(self, sample: KSpaceSample, plan: Plan) -> ReconResult:
        loop = asyncio.get_running_loop()
        if plan.artifact is None:
            started = time.perf_counter()
            result = await loop.run_in_executor(self._pool, self.pipeline.classical, sample, plan)
            self._observe_classical(result, time.perf_counter() - started)
            return result
        chosen = plan.artifact
        started = time.perf_counter()
        prepared = await loop.run_in_executor(self._pool, self.pipeline.prepare, chosen, sample)
        preparation_s = time.perf_counter() - started
        self.metrics.observe_stage("preparation", preparation_s)
        completed = await self._batchers[chosen.label].submit(prepared, batch_key(prepared))
        self.metrics.observe_stage("queue", completed.queue_s)
        self.metrics.observe_stage("inference", completed.inference_s)
        return self.pipeline.restore(chosen, sample, completed.value, {
            "preparation": preparation_s, "queue": completed.queue_s, "inference": completed.inference_s})

    # -- uncertainty maps ----------------------------------------------------------------------------------------

    @property
    def posterior(self) -> Any:
        """The ``PosteriorEstimator`` over ``config.priors`` (made once, on first use; its chains may hold a quarter
        of ``max_request_bytes``)."""
        with self._posterior_lock:
            if self._posterior is None:
                from mrdserve.service.posterior import PosteriorEstimator

                self._posterior = PosteriorEstimator(self.config.priors, self.device,
                                                     memory_bytes=self.config.max_request_bytes // 4)
            return self._posterior

    def check_uncertainty(self, n_samples: Any, field: str = "uncertainty",
                          samples: Sequence[KSpaceSample] = ()) -> int:
        """A request's number of posterior samples per slice, checked before any work starts: ValueError naming
        ``field`` for a bad count, when no score prior is configured, or for ``samples`` it cannot take (3D)."""
        from mrdserve.service.posterior import check_sample, check_uncertainty

        n_samples = check_uncertainty(n_samples, field)
        if n_samples and not self.posterior.available:
            raise ValueError(f"{field}: uncertainty maps need a score-prior artifact and none is configured "
                             f"(priors: {', '.join(str(p) for p in self.config.priors)})")
        for sample in samples if n_samples else ():
            check_sample(sample)
        return n_samples

    def _estimate(self, result: ReconResult, n_samples: int, progress: Callable[[float], None] | None,
                  cancel: threading.Event | None = None, deadline: float | None = None) -> None:
        """The posterior images of one result; a failure is kept in ``result.posterior_error`` (and logged), never
        raised: the reconstruction stands and is delivered without its maps. ``cancel`` set stops the sampling
        (and any not yet started: the requester is gone). ``deadline`` (``time.perf_counter`` time) is the end of
        the request's sampling budget: the slice gets what is left of it, at most ``uncertainty_budget_s``."""
        from mrdserve.models.physics.posterior_sampling import SamplingCancelledError

        started = time.perf_counter()
        if cancel is not None and cancel.is_set():
            result.posterior_error = "uncertainty maps not made: the request was cancelled"
            return
        budget = self.config.uncertainty_budget_s
        if deadline is not None:
            budget = min(budget, deadline - started)
            if budget <= 0:
                result.posterior_error = (f"uncertainty maps not made: the request's sampling budget "
                                          f"({self.config.uncertainty_request_budget_s:g} s) was spent on earlier "
                                          "slices")
                return
        try:
            result.derived = self.posterior.estimate(result, n_samples, budget, progress, cancel=cancel)
        except SamplingCancelledError:
            result.posterior_error = "uncertainty maps not made: the request was cancelled"
            log.info("posterior sampling cancelled: the request went away")
            return
        except Exception as error:
            result.posterior_error = f"uncertainty maps not made: {type(error).__name__}: {str(error)[:300]}"
            log.warning("posterior sampling failed: %s", result.posterior_error)
            return
        result.timings["posterior"] = time.perf_counter() - started
        self.metrics.observe_stage("posterior", result.timings["posterior"])

    async def add_uncertainty(self, results: Sequence[ReconResult], n_samples: int,
                              progress: Callable[[float], None] | None = None) -> None:
        """Attach posterior mean and standard-deviation images (``ReconResult.derived``) to each result, one slice
        after the other on the posterior thread, each within ``config.uncertainty_budget_s`` and all within
        ``config.uncertainty_request_budget_s`` (from this call: waiting for the thread counts); a slice whose
        maps fail keeps its image and says why in ``posterior_error``. ``progress(fraction of the request)`` is called
        from that thread. Nothing happens for ``n_samples == 0``. Cancelling the awaiting task (the client went
        away, the service shuts down) stops the running sampling after its current move."""
        loop = asyncio.get_running_loop()
        cancel = threading.Event()  # set when this coroutine is cancelled (client gone, shutdown): the thread stops
        deadline = time.perf_counter() + self.config.uncertainty_request_budget_s
        try:
            for index, result in enumerate(results if n_samples else ()):
                report = None if progress is None else (
                    lambda fraction, index=index: progress((index + fraction) / len(results)))
                await loop.run_in_executor(self._posterior_pool, self._estimate, result, n_samples, report, cancel,
                                           deadline)
        except asyncio.CancelledError:
            cancel.set()
            raise

    def add_uncertainty_sync(self, results: Sequence[ReconResult], n_samples: int) -> None:
        """``add_uncertainty`` in the calling thread (``mrdserve recon --uncertainty``)."""
        deadline = time.perf_counter() + self.config.uncertainty_request_budget_s
        for result in results if n_samples else ():
            self._estimate(result, n_samples, None, deadline=deadline)

    def _observe_classical(self, result: ReconResult, seconds: float) -> None:
        self.metrics.observe_stage("inference", seconds)
        result.timings["inference"] = seconds

    def _batch_runner(self, artifact: Artifact):
        """``run(prepared list) -> images`` for one artifact's batcher."""
        return lambda prepared: self.pipeline.run_batch(artifact, prepared)

    def reconstruct_sync(self, samples: Sequence[KSpaceSample], choice: Choice = AUTOMATIC) -> list[ReconResult]:
        """The synchronous driver (no event loop): the same steps, compatible samples in batches of
        ``max_batch`` run in the calling thread; results in input order. A classical choice loads no artifact."""
        if choice.mode is not ChoiceMode.classical:
            self.load()
        plans = self._plans(samples, choice)
        results: list[ReconResult | None] = [None] * len(samples)
        groups: dict[tuple[str, Any], list[tuple[int, PreparedSample, float]]] = {}
        for i, (sample, plan) in enumerate(zip(samples, plans, strict=True)):
            started = time.perf_counter()
            if plan.artifact is None:
                result = self.pipeline.classical(sample, plan)
                self._observe_classical(result, time.perf_counter() - started)
                results[i] = result
                continue
            prepared = self.pipeline.prepare(plan.artifact, sample)
            preparation_s = time.perf_counter() - started
            self.metrics.observe_stage("preparation", preparation_s)
            groups.setdefault((plan.artifact.label, batch_key(prepared)), []).append((i, prepared, preparation_s))
        by_label = {a.label: a for a in self.artifacts}
        for (label, _), members in groups.items():
            chosen = by_label[label]
            for start in range(0, len(members), self.config.max_batch):
                chunk = members[start:start + self.config.max_batch]
                started = time.perf_counter()
                try:
                    images = self.pipeline.run_batch(chosen, [prepared for _, prepared, _ in chunk])
                except Exception as error:
                    raise failure(f"reconstruction with {label}", error) from error
                inference_s = time.perf_counter() - started
                self.metrics.observe_stage("inference", inference_s)
                self.metrics.batch_size.labels(artifact=label).observe(len(chunk))
                for (i, _, preparation_s), image in zip(chunk, images, strict=True):
                    results[i] = self.pipeline.restore(chosen, samples[i], image, {
                        "preparation": preparation_s, "queue": 0.0, "inference": inference_s})
        return [result for result in results if result is not None]
