"""The reconstruction engine every entry point shares (REST, MRD server, gadget, offline CLI).

``start()`` loads and hash-verifies the artifacts, loads each runner once on the device and warms it up with a
synthetic sample; ``ready`` turns True after. ``reconstruct`` plans each sample (artifact by name or by
constraints, else the classical fallback with its reason), prepares it in a worker thread with the manifest's
preparation, submits it to the artifact's dynamic batcher, and returns ``ReconResult``s with stage timings.
Preparation happens on the CPU; each batch is moved to the device once (pinned memory on CUDA).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from mrdserve.models.data.baseline import check_method, classical_reconstruction
from mrdserve.models.data.prepare import PreparedSample, collate, output_to_image, prepare_sample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.artifacts import Artifact, load_artifacts
from mrdserve.service.config import ServiceConfig
from mrdserve.service.engine.batcher import Batcher, QueueFullError, ReconstructionError, ShuttingDownError
from mrdserve.service.engine.plan import (
    CLASSICAL,
    Plan,
    TrajectoryCacheTracker,
    batch_key,
    plan_sample,
    synthetic_sample,
)
from mrdserve.service.engine.result import ReconResult
from mrdserve.service.metrics import ServiceMetrics
from mrdserve.service.runners import Runner, default_runner_kind, load_runner, resolve_device, to_device

__all__ = ["CLASSICAL", "Engine", "QueueFullError", "ReconstructionError", "ShuttingDownError"]

log = logging.getLogger("mrdserve.engine")


class Engine:
    """Artifacts, runners and batchers of one process; see the module docstring."""

    def __init__(self, config: ServiceConfig | None = None, metrics: ServiceMetrics | None = None) -> None:
        self.config = config or ServiceConfig()
        self.metrics = metrics or ServiceMetrics()
        self.device = resolve_device(self.config.device)
        self.runner_kind = (default_runner_kind(self.device) if self.config.runner == "auto"
                            else self.config.runner)
        self.artifacts: list[Artifact] = []
        self.ready = False
        self._runners: dict[str, Runner] = {}
        self._batchers: dict[str, Batcher] = {}
        self._loaded = False
        self._cache = TrajectoryCacheTracker()
        workers = max(2, min(8, os.cpu_count() or 2))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mrdserve-prep")
        # the classical path has no batcher: new requests are refused (503) while this many of its slices wait or
        # run (a request admitted below the bound runs all its slices)
        self._classical_limit = self.config.queue_size + workers
        self._classical_inflight = 0

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Verify and load the artifacts and their runners once (blocking; ``start`` runs it in a thread)."""
        if self._loaded:
            return
        artifacts = load_artifacts(self.config.artifacts)
        labels = [a.label for a in artifacts]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"artifact(s) {', '.join(duplicates)} found in more than one directory of "
                             f"{[str(p) for p in self.config.artifacts]}")
        for artifact in artifacts:
            self._runners[artifact.label] = load_runner(artifact.path, self.runner_kind, self.device,
                                                        self.config.onnx_providers or None)
            manifest = artifact.manifest
            self.metrics.artifact_info.labels(name=artifact.name, version=artifact.version, task=manifest["task"],
                                              network=manifest["network"]["name"]).set(1)
        self.artifacts = artifacts
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
            prepared = await loop.run_in_executor(self._pool, self._prepare_synthetic, artifact)
            run = self._batch_runner(artifact)
            for _ in range(2):  # TorchScript's profiling executor optimises on the second call
                await self._batchers[artifact.label].run_in_worker(run, [prepared])
        except Exception as error:
            raise RuntimeError(f"warm-up of artifact {artifact.label} failed: {error}") from error
        log.info("warmed up %s in %.2f s", artifact.label, time.perf_counter() - started)

    def _prepare_synthetic(self, artifact: Artifact) -> PreparedSample:
        preparation = artifact.manifest["preparation"]
        return prepare_sample(synthetic_sample(artifact), preparation["name"], preparation["params"])

    async def shutdown(self) -> None:
        """Stop accepting work, finish every accepted job, release the threads."""
        self.ready = False
        await asyncio.gather(*(batcher.close() for batcher in self._batchers.values()))
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
                "network": manifest["network"]["name"], "task": manifest["task"],
                "preparation": manifest["preparation"]["name"], "constraints": manifest["constraints"],
                "runner": self.runner_kind, "device": str(self.device),
                "intended_use": manifest.get("intended_use", ""), "validation": manifest.get("validation", {}),
                "queue_depth": batcher.depth if batcher is not None else 0,
            })
        return entries

    # -- reconstruction ----------------------------------------------------------------------------------------

    def plan(self, sample: KSpaceSample, artifact: str | None = None) -> Plan:
        """The artifact (or classical fallback and reason) for one sample; ValueError for an unknown name."""
        return plan_sample(self.artifacts, sample, artifact)

    async def reconstruct(self, samples: Sequence[KSpaceSample], artifact: str | None = None,
                          request_id: str = "", timeout_s: float | None = None,
                          method: str = "auto") -> list[ReconResult]:
        """Reconstruct ``samples`` concurrently (batched with other requests); results in input order.
        ``method`` is the classical method (``models.data.baseline.METHODS``) wherever the classical path is used.

        Raises ValueError (unknown or unfit artifact, data the preparation rejects), QueueFullError (back-pressure,
        503), TimeoutError (after ``timeout_s``, default ``config.request_timeout_s``) and ReconstructionError.
        """
        if not self.ready:
            raise ShuttingDownError("the engine is not ready (loading artifacts or shutting down)", 5.0)
        check_method(method)
        plans = [self.plan(sample, artifact) for sample in samples]  # unknown names fail before any work
        classical = sum(1 for plan in plans if plan.artifact is None)
        if classical and self._classical_inflight >= self._classical_limit:
            raise QueueFullError(f"the classical reconstruction queue is full ({self._classical_inflight} slices "
                                 f"waiting or running); retry later", 1.0)
        self._classical_inflight += classical  # a request already admitted runs all its slices
        timeout = self.config.request_timeout_s if timeout_s is None else timeout_s
        tasks = [asyncio.ensure_future(self._reconstruct_one(s, p, request_id, method))
                 for s, p in zip(samples, plans, strict=True)]
        try:
            async with asyncio.timeout(timeout):
                return list(await asyncio.gather(*tasks))
        except TimeoutError:
            raise TimeoutError(f"reconstruction did not finish within {timeout:g} s") from None
        finally:
            self._classical_inflight -= classical
            for task in tasks:  # one failing (or the caller going away) cancels the rest of the request
                task.cancel()

    async def _reconstruct_one(self, sample: KSpaceSample, plan: Plan, request_id: str,
                               method: str = "auto") -> ReconResult:
        loop = asyncio.get_running_loop()
        if plan.artifact is None:
            started = time.perf_counter()
            result = await loop.run_in_executor(self._pool, self._classical, sample, plan, method)
            self.metrics.observe_stage("inference", time.perf_counter() - started)
            result.timings["inference"] = time.perf_counter() - started
            return result
        chosen = plan.artifact
        started = time.perf_counter()
        prepared = await loop.run_in_executor(self._pool, self._prepare, chosen, sample)
        preparation_s = time.perf_counter() - started
        self.metrics.observe_stage("preparation", preparation_s)
        completed = await self._batchers[chosen.label].submit(prepared, batch_key(prepared))
        self.metrics.observe_stage("queue", completed.queue_s)
        self.metrics.observe_stage("inference", completed.inference_s)
        return ReconResult(image=completed.value, sample=sample, label=chosen.label, artifact=chosen.name,
                           version=chosen.version,
                           timings={"preparation": preparation_s, "queue": completed.queue_s,
                                    "inference": completed.inference_s})

    def _prepare(self, artifact: Artifact, sample: KSpaceSample) -> PreparedSample:
        if sample.trajectory is not None and self._cache.seen_before(sample.trajectory):
            self.metrics.cache_hits.inc()
        preparation = artifact.manifest["preparation"]
        return prepare_sample(sample, preparation["name"], preparation["params"])

    def _classical(self, sample: KSpaceSample, plan: Plan, method: str = "auto") -> ReconResult:
        reason = plan.fallback_reason
        try:
            made = classical_reconstruction(sample, method=method, device=self.device,
                                            preferred=plan.classical_method)
        except ValueError:
            raise
        except Exception as error:
            raise ReconstructionError(f"classical reconstruction failed: {type(error).__name__}: "
                                      f"{str(error)[:300]}") from error
        image = made.image.detach().to("cpu", torch.float32).numpy()
        return ReconResult(image=image, sample=sample, label=f"{CLASSICAL}:{made.method}", fallback_reason=reason)

    def _batch_runner(self, artifact: Artifact):
        """``run(prepared list) -> images`` for one artifact: collate, move once, run, back to data units."""
        runner = self._runners[artifact.label]
        device = self.device

        def run(prepared: list[PreparedSample]) -> list[np.ndarray]:
            output = runner.run(to_device(collate(prepared), device))
            images = []
            for i, item in enumerate(prepared):
                image = output_to_image(output[i:i + 1], item.scale.to(output.device), item.recon_matrix)[0]
                images.append(image.detach().to("cpu", torch.float32).numpy())
            return images

        return run

    # -- offline -----------------------------------------------------------------------------------------------

    def reconstruct_sync(self, samples: Sequence[KSpaceSample], artifact: str | None = None,
                         request_id: str = "", method: str = "auto") -> list[ReconResult]:
        """Reconstruct without an event loop (``mrdserve recon``, benchmarks): compatible samples run in batches
        of ``max_batch``; the same plan, preparation and runners as ``reconstruct``."""
        self.load()
        check_method(method)
        plans = [self.plan(sample, artifact) for sample in samples]
        results: list[ReconResult | None] = [None] * len(samples)
        groups: dict[tuple[str, Any], list[tuple[int, PreparedSample, float]]] = {}
        for i, (sample, plan) in enumerate(zip(samples, plans, strict=True)):
            started = time.perf_counter()
            if plan.artifact is None:
                results[i] = self._classical(sample, plan, method)
                results[i].timings["inference"] = time.perf_counter() - started  # type: ignore[union-attr]
                continue
            prepared = self._prepare(plan.artifact, sample)
            preparation_s = time.perf_counter() - started
            self.metrics.observe_stage("preparation", preparation_s)
            groups.setdefault((plan.artifact.label, batch_key(prepared)), []).append((i, prepared, preparation_s))
        by_label = {a.label: a for a in self.artifacts}
        for (label, _), members in groups.items():
            chosen = by_label[label]
            run = self._batch_runner(chosen)
            for start in range(0, len(members), self.config.max_batch):
                chunk = members[start:start + self.config.max_batch]
                started = time.perf_counter()
                try:
                    images = run([prepared for _, prepared, _ in chunk])
                except Exception as error:
                    raise ReconstructionError(f"reconstruction with {label} failed: {type(error).__name__}: "
                                              f"{str(error)[:300]}") from error
                inference_s = time.perf_counter() - started
                self.metrics.observe_stage("inference", inference_s)
                self.metrics.batch_size.labels(artifact=label).observe(len(chunk))
                for (i, _, preparation_s), image in zip(chunk, images, strict=True):
                    results[i] = ReconResult(image=image, sample=samples[i], label=label, artifact=chosen.name,
                                             version=chosen.version,
                                             timings={"preparation": preparation_s, "queue": 0.0,
                                                      "inference": inference_s})
        return [result for result in results if result is not None]
