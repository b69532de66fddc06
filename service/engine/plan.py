"""The planning step of a job: which artifact reconstructs a sample (or why none does), how jobs batch together,
and the synthetic sample that warms an artifact up before the service reports ready."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from mrdserve.models.data.envelope import best_classical
from mrdserve.models.data.prepare import PreparedSample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.simulate import simulate_cartesian, simulate_noncartesian
from mrdserve.models.physics.density import DENSITY_WEIGHTS
from mrdserve.service.artifacts import Artifact, choose, mismatch
from mrdserve.service.engine.choice import AUTOMATIC, Choice, ChoiceMode

REQUESTED = "classical reconstruction requested"
NO_ARTIFACTS = "no artifacts are loaded"


def no_fit(reasons: str) -> str:
    """The fallback reason when artifacts are loaded but none fits (``reasons`` per artifact)."""
    return f"no artifact fits this data ({reasons})"


@dataclass(frozen=True)
class Plan:
    """The artifact chosen for a sample, or None with the reason the classical fallback is used and its method
    (``method`` as requested; ``classical_method`` the best one of the data's envelope cell, if one says)."""

    artifact: Artifact | None
    fallback_reason: str | None = None
    classical_method: str | None = None
    method: str = "auto"


def plan_sample(artifacts: Sequence[Artifact], sample: KSpaceSample, choice: Choice = AUTOMATIC) -> Plan:
    """The one planning step: ``choice`` (by name: ValueError when unknown or unfit; classical; among the
    artifacts of some tasks; automatic) applied to ``sample``."""
    if choice.mode is ChoiceMode.classical:
        return Plan(None, REQUESTED, method=choice.method)
    if choice.mode is ChoiceMode.artifact:
        return Plan(choose(list(artifacts), sample, choice.artifact), method=choice.method)
    if choice.mode is ChoiceMode.task:  # among the artifacts of some tasks; the reason names the config
        candidates = [a for a in artifacts if a.manifest.task in choice.tasks]
        chosen = choose(candidates, sample)
        if chosen is not None:
            return Plan(chosen, method=choice.method)
        reason = no_fit(_refusals(candidates, sample)) if candidates else NO_ARTIFACTS
        return Plan(None, f"config {choice.name!r}: {reason}", method=choice.method)
    chosen = choose(list(artifacts), sample)
    if chosen is not None:
        return Plan(chosen, method=choice.method)
    if not artifacts:
        return Plan(None, NO_ARTIFACTS, method=choice.method)
    winners = (best_classical(a.manifest.document, sample) for a in artifacts if mismatch(a, sample) is None)
    return Plan(None, no_fit(_refusals(artifacts, sample)), next((m for m in winners if m), None), choice.method)


def _refusals(artifacts: Sequence[Artifact], sample: KSpaceSample) -> str:
    return "; ".join(f"{a.label}: {mismatch(a, sample, envelope=True)}" for a in artifacts)


def batch_key(prepared: PreparedSample) -> Hashable:
    """Jobs batch together when their inputs have the same names and shapes."""
    return tuple((name, tuple(tensor.shape), tensor.dtype) for name, tensor in prepared.inputs.items())


class TrajectoryCacheTracker:
    """Counts preparations whose trajectory was seen recently, i.e. that reuse the per-trajectory caches of
    ``models.physics`` (density weights, Toeplitz kernels); bounded like ``DENSITY_WEIGHTS``."""

    def __init__(self, max_entries: int | None = None) -> None:
        self.max_entries = max_entries or DENSITY_WEIGHTS.max_entries
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def seen_before(self, key: str) -> bool:
        """Whether a trajectory (its ``KSpaceSample.trajectory_key``, hashed once per slice) was seen recently."""
        with self._lock:
            hit = key in self._seen
            self._seen[key] = None
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
        return hit


def synthetic_sample(artifact: Artifact, seed: int = 0) -> KSpaceSample:
    """A noiseless simulated sample that fits ``artifact`` (at its training matrix where the manifest says)."""
    manifest = artifact.manifest
    constraints = manifest.constraints
    matrix = int(constraints.matrix.clamp(max(manifest.trained_matrix or (64,))))
    coils = int(constraints.coils.clamp(8))
    acceleration = float(constraints.acceleration.clamp(4.0))
    task = manifest.task
    if task.startswith("cartesian"):
        sim = simulate_cartesian(matrix, n_coils=coils, acceleration=acceleration, noise_level=0.0,
                                 readout_oversampling=1, with_noise_scan=False, seed=seed)
        assert sim.mask is not None and sim.acs is not None  # a Cartesian simulation has both
        return KSpaceSample(kspace=sim.kspace[0], matrix=sim.matrix, recon_matrix=sim.matrix,
                            mask=sim.mask[:, None], acs_mask=sim.acs[:, None], acceleration=(round(acceleration),))
    kind = constraints.trajectory[0]
    shape: tuple[int, ...] = (max(8, matrix // 4), matrix, matrix) if task == "noncartesian3d" else (matrix, matrix)
    sim = simulate_noncartesian(kind, shape, n_coils=coils, acceleration=acceleration, noise_level=0.0,
                                with_noise_scan=False, seed=seed)
    assert sim.trajectory is not None  # a non-Cartesian simulation has one
    accel = (round(acceleration),) * (2 if task == "noncartesian3d" else 1)
    return KSpaceSample(kspace=sim.kspace[0], matrix=sim.matrix, recon_matrix=sim.matrix, trajectory_type=kind,
                        trajectory=sim.trajectory.to(torch.float32), acceleration=accel)
