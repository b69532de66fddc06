"""Artifacts the runtime can serve: discovered in directories, hash-verified, chosen per sample.

An artifact is chosen for a sample by its manifest's task and acceptance constraints (trajectory, coils,
matrix, acceleration) and, for automatic choice, by its validation envelope (the cells of matrix, coils,
acceleration and noise level where it beat the best classical method on held-out data); ``choose`` returns None
when nothing fits, and the caller falls back to the classical reconstruction and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mrdserve.models.data.manifest import Manifest
from mrdserve.models.data.manifest_schema import MANIFEST_FILE, verify_artifact

if TYPE_CHECKING:  # torch-free at import time, so `mrdserve models` lists artifacts quickly
    from mrdserve.models.data.sample import KSpaceSample

BUNDLED_ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@dataclass(frozen=True)
class Artifact:
    """A verified artifact directory and its manifest."""

    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"


def artifact_directories(roots: list[Path]) -> list[Path]:
    """Artifact directories under ``roots`` (a root holding manifest.json counts as one), sorted, unique."""
    found: list[Path] = []
    for root in roots:
        if (root / MANIFEST_FILE).is_file():
            found.append(root)
        elif root.is_dir():
            found.extend(sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    return list(dict.fromkeys(found))


def load_artifacts(roots: list[Path] | None = None) -> list[Artifact]:
    """Verify and load every artifact under ``roots`` (default: the bundled ones); a bad one raises ValueError."""
    return [Artifact(path, Manifest.from_document(verify_artifact(path)))
            for path in artifact_directories(roots or [BUNDLED_ARTIFACTS])]


def _acceleration(sample: KSpaceSample) -> float:
    if sample.is_cartesian and sample.mask is not None:
        sampled = float(sample.mask.float().mean())
        return 1.0 / sampled if sampled > 0 else float("inf")
    return float(max(sample.acceleration))


def mismatch(artifact: Artifact, sample: KSpaceSample, envelope: bool = False) -> str | None:
    """Why ``artifact`` cannot reconstruct ``sample`` (None when it can); with ``envelope``, also why it is not
    served automatically (outside the cells where it was validated to beat the best classical method)."""
    from mrdserve.models.data.envelope import envelope_refusal
    from mrdserve.models.data.prepare import task_of

    manifest = artifact.manifest
    constraints = manifest.constraints
    task = task_of(sample)
    if manifest.task != task:
        return f"task {task} (artifact serves {manifest.task})"
    trajectory = sample.trajectory_type
    if trajectory not in constraints.trajectory:
        return f"trajectory {trajectory} (artifact accepts {', '.join(constraints.trajectory)})"
    checks = (("coils", sample.n_coils), ("matrix", max(sample.matrix)), ("acceleration", _acceleration(sample)))
    for key, value in checks:
        bounds = constraints.bounds(key)
        if not bounds.contains(value):
            return f"{key} {value:g} outside [{bounds.min}, {bounds.max}]"
    return envelope_refusal(manifest.document, sample) if envelope else None


def choose(artifacts: list[Artifact], sample: KSpaceSample, name: str | None = None) -> Artifact | None:
    """The artifact named ``name`` (ValueError if unknown or unfit; its envelope is not applied: the caller
    asked for it), else the first whose validation envelope serves ``sample``, else None."""
    if name is not None:
        named = [a for a in artifacts if name in (a.name, a.label)]
        if not named:
            known = ", ".join(a.label for a in artifacts) or "none"
            raise ValueError(f"unknown artifact {name!r}; known artifacts: {known}")
        reason = mismatch(named[-1], sample)
        if reason is not None:
            raise ValueError(f"artifact {named[-1].label} does not fit this data: {reason}")
        return named[-1]
    return next((a for a in artifacts if mismatch(a, sample, envelope=True) is None), None)
