"""The per-sample steps of every reconstruction, written once: validate -> plan -> prepare -> run batch -> restore.

Two drivers run them (``service.engine.engine``): the asynchronous one batches prepared samples across requests in
a per-artifact ``Batcher`` (REST, MRD server, gadget), the synchronous one runs them directly in batches of
``max_batch`` (``mrdserve recon``, benchmarks). Both use the same ``Pipeline``, so a sample gets the same plan,
preparation, runner and result wherever it comes from. Preparation runs on the CPU; a batch is moved to the device
once (pinned memory on CUDA). Runners load once per artifact, on first use unless ``preload`` loads them all.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from mrdserve.models.data.baseline import classical_reconstruction
from mrdserve.models.data.prepare import PreparedSample, collate, output_to_image, prepare_sample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.admission import check_samples
from mrdserve.service.artifacts import Artifact
from mrdserve.service.engine.batcher import failure
from mrdserve.service.engine.choice import Choice
from mrdserve.service.engine.plan import Plan, TrajectoryCacheTracker, plan_sample, synthetic_sample
from mrdserve.service.engine.result import ReconResult
from mrdserve.service.metrics import ServiceMetrics
from mrdserve.service.runners import Runner, load_runner, to_device


class Pipeline:
    """The steps over one process's artifacts and runners; thread-safe (steps run in worker threads)."""

    def __init__(self, artifacts: Sequence[Artifact], runner_kind: str, device: torch.device,
                 metrics: ServiceMetrics, onnx_providers: list[str] | None = None) -> None:
        self.artifacts = list(artifacts)
        self.runner_kind = runner_kind
        self.device = device
        self.metrics = metrics
        self.onnx_providers = onnx_providers
        self._runners: dict[str, Runner] = {}
        self._runner_lock = threading.Lock()
        self._trajectories = TrajectoryCacheTracker()

    def runner(self, artifact: Artifact) -> Runner:
        """The artifact's runner, loaded on the device the first time it is needed."""
        with self._runner_lock:
            if artifact.label not in self._runners:
                self._runners[artifact.label] = load_runner(artifact.path, self.runner_kind, self.device,
                                                            self.onnx_providers)
            return self._runners[artifact.label]

    # -- the steps ---------------------------------------------------------------------------------------------

    @staticmethod
    def validate(samples: Sequence[KSpaceSample]) -> None:
        """Refuse what no reconstruction may take (non-finite k-space), the same on every entry point."""
        check_samples(samples)

    def plan(self, sample: KSpaceSample, choice: Choice) -> Plan:
        """The artifact (or the classical method and the reason) for one sample; ValueError for an unfit name."""
        return plan_sample(self.artifacts, sample, choice)

    def prepare(self, artifact: Artifact, sample: KSpaceSample) -> PreparedSample:
        """The artifact's preparation (its manifest names it) of one sample, on the CPU."""
        if sample.trajectory_key is not None and self._trajectories.seen_before(sample.trajectory_key):
            self.metrics.cache_hits.inc()
        preparation = artifact.manifest.preparation
        return prepare_sample(sample, preparation.name, dict(preparation.params))

    def prepare_synthetic(self, artifact: Artifact) -> PreparedSample:
        """A prepared sample that fits ``artifact``, to warm its runner up."""
        return self.prepare(artifact, synthetic_sample(artifact))

    def run_batch(self, artifact: Artifact, prepared: list[PreparedSample]) -> list[np.ndarray]:
        """Collate, move to the device once, run, and restore each output to a magnitude image in data units."""
        output = self.runner(artifact).run(to_device(collate(prepared), self.device))
        images = []
        for i, item in enumerate(prepared):
            image = output_to_image(output[i:i + 1], item.scale.to(output.device), item.recon_matrix)[0]
            images.append(image.detach().to("cpu", torch.float32).numpy())
        return images

    @staticmethod
    def restore(artifact: Artifact, sample: KSpaceSample, image: np.ndarray,
                timings: dict[str, float]) -> ReconResult:
        """The result of a learned reconstruction."""
        return ReconResult(image=image, sample=sample, label=artifact.label, artifact=artifact.name,
                           version=artifact.version, timings=timings)

    def classical(self, sample: KSpaceSample, plan: Plan) -> ReconResult:
        """The classical path for one sample (``plan.method``, or the envelope's best method where it says)."""
        try:
            made = classical_reconstruction(sample, method=plan.method, device=self.device,
                                            preferred=plan.classical_method)
        except ValueError:
            raise
        except Exception as error:
            raise failure("classical reconstruction", error) from error
        image = made.image.detach().to("cpu", torch.float32).numpy()
        return ReconResult.classical(image, sample, made.method, plan.fallback_reason)
