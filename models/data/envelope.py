"""Reading an artifact's validation envelope at serving time: which cell a sample falls in and whether the
artifact is served there (see ``models.export.envelope`` for how the envelope is made).

The noise axis is measured, not declared: ``relative_noise`` is computed from the k-space by the same estimator
at validation and at serving, on prewhitened or raw data alike, without a transform (cheap at planning time).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mrdserve.models.data.baseline import sampled_lines
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.physics.noise_level import kspace_noise_variance, samples_noise_variance


def relative_noise(sample: KSpaceSample) -> float:
    """Noise std relative to the mean image intensity, both read off the k-space: the estimated noise std
    (``models.physics.noise_level``) times sqrt(pixels) over the largest coil-combined sample (the k-space
    centre, sqrt(pixels) times the mean image value with orthonormal transforms). Independent of acceleration
    and matrix size, the envelope's noise axis."""
    trajectory = sample.trajectory  # None for Cartesian data
    if trajectory is None:
        lines = sampled_lines(sample)
        variance = kspace_noise_variance(sample.kspace[:, lines] if lines.dim() == 1 else sample.kspace)
    else:
        variance = samples_noise_variance(sample.kspace, trajectory)
    peak = float(sample.kspace.abs().square().sum(0).sqrt().max())
    return math.sqrt(variance * math.prod(sample.matrix)) / peak if peak > 0 else 0.0


def acceleration_of(sample: KSpaceSample) -> float:
    """Acquired fraction's inverse for Cartesian data, the declared factor otherwise."""
    if sample.is_cartesian:
        lines = sampled_lines(sample)
        return lines.numel() / max(float(lines.sum()), 1.0)
    return float(max(sample.acceleration))


def bin_edges(values: Sequence[float], geometric: bool) -> list[float]:
    """Bin edges: midpoints between grid points, outer edges a half step beyond the extremes."""
    points = sorted(float(v) for v in values)
    if len(points) == 1:
        return [points[0] / 1.25, points[0] * 1.25] if geometric else [points[0] * 0.8, points[0] * 1.25]
    if geometric:
        mids = [math.sqrt(a * b) for a, b in itertools.pairwise(points)]
        return [points[0] ** 2 / mids[0], *mids, points[-1] ** 2 / mids[-1]]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(points)]
    return [points[0] - (mids[0] - points[0]), *mids, points[-1] + (points[-1] - mids[-1])]


def bin_index(edges: Sequence[float], value: float) -> int | None:
    if not edges[0] <= value <= edges[-1]:
        return None
    return min(bisect.bisect_right(list(edges), value) - 1, len(edges) - 2)


def _locate(envelope: dict[str, Any], sample: KSpaceSample) -> tuple[dict[str, Any] | None, str | None]:
    """The cell ``sample`` falls in, or None with the axis it falls outside of (noise is measured last)."""
    axes = envelope["axes"]
    measures = {"matrix": lambda: float(max(sample.matrix)), "coils": lambda: float(sample.n_coils),
                "acceleration": lambda: acceleration_of(sample), "noise": lambda: relative_noise(sample)}
    position: dict[str, int] = {}
    for axis, measure in measures.items():
        edges = axes[axis]["edges"]
        value = measure()
        index = bin_index(edges, value)
        if index is None:
            return None, f"{axis} {value:.3g} outside the validated range [{edges[0]:.3g}, {edges[-1]:.3g}]"
        position[axis] = index
    for cell in envelope["cells"]:
        if (sorted(axes["matrix"]["points"]).index(cell["matrix"]) == position["matrix"]
                and sorted(axes["coils"]["points"]).index(cell["coils"]) == position["coils"]
                and sorted(axes["acceleration"]["points"]).index(cell["acceleration"]) == position["acceleration"]
                and cell["noise"] == position["noise"]):
            return cell, None
    return None, "no validated cell at this matrix, coil count, acceleration and noise level"


def best_classical(manifest: Mapping[str, Any], sample: KSpaceSample) -> str | None:
    """The classical method that won the envelope cell ``sample`` falls in (None outside the envelope)."""
    envelope = manifest.get("validation", {}).get("envelope")
    cell = _locate(envelope, sample)[0] if envelope else None
    return None if cell is None else str(cell["classical"]["method"])


def envelope_refusal(manifest: Mapping[str, Any], sample: KSpaceSample) -> str | None:
    """Why the artifact is not served automatically for ``sample`` (None when its envelope cell serves it)."""
    envelope = manifest.get("validation", {}).get("envelope")
    if not envelope:
        return "has no validation envelope (name it explicitly to use it anyway)"
    cell, outside = _locate(envelope, sample)
    if cell is None:
        return outside
    if not cell["serve"]:
        classical = cell["classical"]
        return (f"validated below {classical['method']} here ({cell['psnr']:.1f} vs {classical['psnr']:.1f} dB, "
                f"SSIM {cell['ssim']:.3f} vs {classical['ssim']:.3f}; matrix {cell['matrix']}, {cell['coils']} "
                f"coils, R {cell['acceleration']:g})")
    return None


def envelope_constraints(constraints: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
    """The acceptance constraints narrowed to what the envelope validated."""
    narrowed = dict(constraints)
    for key in ("matrix", "coils", "acceleration"):
        edges = envelope["axes"][key]["edges"]
        low, high = edges[0], edges[-1]
        if key in ("matrix", "coils"):
            low, high = math.ceil(low), math.floor(high)
        narrowed[key] = {"min": max(constraints[key]["min"], low), "max": min(constraints[key]["max"], high)}
    return narrowed
