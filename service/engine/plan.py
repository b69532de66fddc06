"""The planning step of a job: which artifact reconstructs a sample (or why none does), how jobs batch together,
and the synthetic sample that warms an artifact up before the service reports ready."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import torch

from mrdserve.models.data.baseline import METHODS
from mrdserve.models.data.envelope import best_classical
from mrdserve.models.data.prepare import PreparedSample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.simulate import simulate_cartesian, simulate_noncartesian
from mrdserve.models.physics.density import DENSITY_WEIGHTS
from mrdserve.models.physics.nufft import trajectory_hash
from mrdserve.service.artifacts import Artifact, choose, mismatch

CLASSICAL = "classical"
CLASSICAL_METHOD_NAMES = METHODS  # the classical methods a request may name (models.data.baseline.METHODS)


@dataclass(frozen=True)
class Plan:
    """The artifact chosen for a sample, or None with the reason the classical fallback is used."""

    artifact: Artifact | None
    fallback_reason: str | None = None
    classical_method: str | None = None  # the best classical method of the data's envelope cell, if one says


def plan_sample(artifacts: list[Artifact], sample: KSpaceSample, requested: str | None = None) -> Plan:
    """Choose by name (``requested``; ValueError when unknown or unfit), ``classical``, or by constraints."""
    if requested == CLASSICAL:
        return Plan(None, "classical reconstruction requested")
    chosen = choose(artifacts, sample, requested)
    if chosen is not None:
        return Plan(chosen)
    if not artifacts:
        return Plan(None, "no artifacts are loaded")
    reasons = "; ".join(f"{a.label}: {mismatch(a, sample, envelope=True)}" for a in artifacts)
    winners = (best_classical(a.manifest, sample) for a in artifacts if mismatch(a, sample) is None)
    return Plan(None, f"no artifact fits this data ({reasons})", next((m for m in winners if m), None))


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

    def seen_before(self, trajectory: torch.Tensor) -> bool:
        key = trajectory_hash(trajectory)
        with self._lock:
            hit = key in self._seen
            self._seen[key] = None
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
        return hit


def _clamp(value: float, bounds: dict) -> float:
    return min(max(value, bounds["min"]), bounds["max"])


def synthetic_sample(artifact: Artifact, seed: int = 0) -> KSpaceSample:
    """A noiseless simulated sample that fits ``artifact`` (at its training matrix where the manifest says)."""
    manifest = artifact.manifest
    constraints = manifest["constraints"]
    trained = manifest.get("equivalence", {}).get("sample", {}).get("matrix") or [64]
    matrix = int(_clamp(max(trained), constraints["matrix"]))
    coils = int(_clamp(8, constraints["coils"]))
    acceleration = float(_clamp(4.0, constraints["acceleration"]))
    task = manifest["task"]
    if task.startswith("cartesian"):
        sim = simulate_cartesian(matrix, n_coils=coils, acceleration=acceleration, noise_level=0.0,
                                 readout_oversampling=1, with_noise_scan=False, seed=seed)
        return KSpaceSample(kspace=sim.kspace[0], matrix=sim.matrix, recon_matrix=sim.matrix,
                            mask=sim.mask[:, None], acs_mask=sim.acs[:, None], acceleration=(round(acceleration),))
    kind = constraints["trajectory"][0]
    shape: tuple[int, ...] = (max(8, matrix // 4), matrix, matrix) if task == "noncartesian3d" else (matrix, matrix)
    sim = simulate_noncartesian(kind, shape, n_coils=coils, acceleration=acceleration, noise_level=0.0,
                                with_noise_scan=False, seed=seed)
    accel = (round(acceleration),) * (2 if task == "noncartesian3d" else 1)
    return KSpaceSample(kspace=sim.kspace[0], matrix=sim.matrix, recon_matrix=sim.matrix, trajectory_type=kind,
                        trajectory=sim.trajectory.to(torch.float32), acceleration=accel)
