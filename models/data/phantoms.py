"""Synthetic head phantoms (2D and 3D) with anatomy, texture, fine detail and smooth phase.

Ellipses alone are far too smooth to train or judge a reconstruction on: their spectrum dies off quickly, so
aliasing and blurring go unnoticed. These phantoms add what real images have: (1) head-like anatomy from
(modified Shepp-Logan style) ellipses/ellipsoids with anti-aliased edges, (2) band-limited power-law textures
inside each tissue, (3) detail at several scales: lesions of 0.7-4 pixels, thin vessel-like lines, and
resolution bars 1-3 pixels wide. Everything is deterministic given the seed (the seed jitters anatomy too).

Geometry is computed in normalised coordinates: each axis spans [-1, 1) over the field of view, in array-axis
order (``(y, x)`` or ``(z, y, x)``). Computation is in float64 numpy; results are torch float32/complex64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "complex_phantom_2d",
    "complex_phantom_3d",
    "phantom_2d",
    "phantom_3d",
    "power_law_field",
    "smooth_phase",
]


@dataclass(frozen=True)
class _Tissue:
    """One ellipse/ellipsoid of anatomy: centre and semi-axes in normalised (array-axis) order."""

    center: tuple[float, ...]
    semi_axes: tuple[float, ...]
    angle_deg: float  # in-plane rotation (about the z axis in 3D)
    value: float
    texture: float  # relative amplitude of the power-law texture inside this tissue


# (y, x) in normalised coordinates, rows grow downwards. Values are a T2-like contrast.
_HEAD_2D: tuple[_Tissue, ...] = (
    _Tissue((0.0, 0.0), (0.94, 0.74), 0.0, 0.80, 0.12),  # scalp / fat
    _Tissue((0.0, 0.0), (0.89, 0.69), 0.0, 0.10, 0.30),  # skull (bone)
    _Tissue((0.01, 0.0), (0.845, 0.645), 0.0, 0.90, 0.04),  # cerebrospinal fluid around the brain
    _Tissue((0.015, 0.0), (0.82, 0.62), 0.0, 0.60, 0.10),  # grey matter
    _Tissue((0.03, 0.0), (0.66, 0.49), 0.0, 0.42, 0.08),  # white matter
    _Tissue((-0.52, 0.0), (0.14, 0.19), 0.0, 0.56, 0.08),  # frontal deep grey nucleus
    _Tissue((-0.02, -0.19), (0.30, 0.09), -18.0, 0.95, 0.02),  # left ventricle
    _Tissue((-0.02, 0.19), (0.34, 0.12), 18.0, 0.95, 0.02),  # right ventricle
    _Tissue((0.40, -0.30), (0.12, 0.08), 25.0, 0.56, 0.08),  # posterior grey nuclei
    _Tissue((0.40, 0.30), (0.12, 0.08), -25.0, 0.56, 0.08),
    _Tissue((-0.10, 0.0), (0.046, 0.046), 0.0, 0.70, 0.0),  # Shepp-Logan's small blobs
    _Tissue((0.10, 0.0), (0.046, 0.046), 0.0, 0.30, 0.0),
    _Tissue((0.605, -0.08), (0.023, 0.046), 0.0, 0.65, 0.0),
    _Tissue((0.605, 0.0), (0.023, 0.023), 0.0, 0.72, 0.0),
    _Tissue((0.605, 0.06), (0.046, 0.023), 0.0, 0.65, 0.0),
)
_WHITE_MATTER = 4  # index in the tables: detail is placed inside this tissue


def _head_3d() -> tuple[_Tissue, ...]:
    """The 2D head extruded to ellipsoids; small structures get short z extents, the brain is rounder."""
    z_semi = (0.92, 0.88, 0.83, 0.80, 0.62, 0.16, 0.30, 0.32, 0.15, 0.15, 0.05, 0.05, 0.04, 0.03, 0.04)
    z_center = (0.0, 0.0, 0.0, 0.0, 0.02, -0.10, 0.0, 0.0, 0.15, 0.15, 0.05, -0.05, 0.25, 0.25, 0.25)
    return tuple(
        _Tissue((zc, *t.center), (zs, *t.semi_axes), t.angle_deg, t.value, t.texture)
        for t, zs, zc in zip(_HEAD_2D, z_semi, z_center, strict=True)
    )


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Normalised coordinates in [-1, 1) per axis (pixel i at -1 + 2 i / n), broadcastable."""
    axes = []
    for axis, n in enumerate(shape):
        coords = -1.0 + 2.0 * np.arange(n, dtype=np.float64) / n
        view = [1] * len(shape)
        view[axis] = n
        axes.append(coords.reshape(view))
    return axes


def _rotation(n_dims: int, angle_deg: float) -> np.ndarray:
    """Rotation in the last two axes (the (y, x) plane): columns are the local axes in array-axis order."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    rot = np.eye(n_dims)
    rot[-2:, -2:] = [[c, -s], [s, c]]
    return rot


def _local(grid: list[np.ndarray], center: np.ndarray, rotation: np.ndarray) -> list[np.ndarray]:
    """Coordinates of every pixel in a shape's local frame: u = R^T (x - c)."""
    shifted = [g - c for g, c in zip(grid, center, strict=True)]
    return [sum(rotation[i, j] * shifted[i] for i in range(len(grid))) for j in range(len(grid))]


def _coverage(signed_distance: np.ndarray, pixel: float) -> np.ndarray:
    """Fraction of a pixel covered by a shape, from the signed distance to its edge (linear 1-pixel ramp)."""
    return np.clip(0.5 - signed_distance / pixel, 0.0, 1.0)


def _ellipsoid(grid: list[np.ndarray], center, semi_axes, angle_deg: float, pixel: float) -> np.ndarray:
    """Anti-aliased coverage of an ellipse/ellipsoid (first-order signed distance (q - 1) / |grad q|)."""
    u = _local(grid, np.asarray(center, float), _rotation(len(grid), angle_deg))
    semi = np.asarray(semi_axes, float)
    q = sum((ui / a) ** 2 for ui, a in zip(u, semi, strict=True)) - 1.0
    grad = np.sqrt(sum((2.0 * ui / a**2) ** 2 for ui, a in zip(u, semi, strict=True)))
    return _coverage(q / np.maximum(grad, 1e-12), pixel)


def _box(grid: list[np.ndarray], center, half_sizes, rotation: np.ndarray, pixel: float) -> np.ndarray:
    """Anti-aliased coverage of a rotated box (Chebyshev-style signed distance)."""
    u = _local(grid, np.asarray(center, float), rotation)
    distance = np.maximum.reduce([np.abs(ui) - h for ui, h in zip(u, half_sizes, strict=True)])
    return _coverage(distance, pixel)


def _segment(grid: list[np.ndarray], start, end, half_width: float, pixel: float) -> np.ndarray:
    """Anti-aliased coverage of a thick line segment; widths under a pixel give partial-volume values."""
    a, b = np.asarray(start, float), np.asarray(end, float)
    direction = b - a
    length2 = float(direction @ direction)
    rel = [g - ai for g, ai in zip(grid, a, strict=True)]
    t = np.clip(sum(r * d for r, d in zip(rel, direction, strict=True)) / length2, 0.0, 1.0)
    distance = np.sqrt(sum((r - t * d) ** 2 for r, d in zip(rel, direction, strict=True)))
    return _coverage(distance - half_width, pixel)


def power_law_field(shape: tuple[int, ...], seed: int | np.random.Generator = 0, exponent: float = 2.5,
                    low_cutoff: float = 2.0, high_cutoff: float = 0.4) -> np.ndarray:
    """Zero-mean, unit-variance random field with power spectrum ~ |k|^-exponent, band-limited.

    ``low_cutoff`` is in cycles per field of view (removes the flat offset), ``high_cutoff`` in cycles per
    pixel (below Nyquist, tapered with a raised cosine so the field has no ringing). Returns float64 numpy.
    """
    rng = np.random.default_rng(seed)
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")  # cycles per pixel
    k = np.sqrt(sum(f**2 for f in freqs))
    k_fov = np.sqrt(sum((f * n) ** 2 for f, n in zip(freqs, shape, strict=True)))  # cycles per FOV
    amplitude = np.where(k_fov >= low_cutoff, np.maximum(k, 1e-12) ** (-exponent / 2.0), 0.0)
    taper = np.clip((high_cutoff - k) / (0.25 * high_cutoff) + 0.5, 0.0, 1.0)
    amplitude *= 0.5 - 0.5 * np.cos(np.pi * taper)
    field = np.fft.ifftn(np.fft.fftn(rng.standard_normal(shape)) * amplitude).real
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


class _Painter:
    """Paints shapes front-to-back ("over" compositing) and remembers each layer's weight for texturing."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.weights: list[np.ndarray] = []
        self.values: list[np.ndarray | float] = []

    def paint(self, coverage: np.ndarray, value: np.ndarray | float) -> None:
        for weight in self.weights:
            weight *= 1.0 - coverage
        self.weights.append(np.broadcast_to(coverage, self.shape).copy())
        self.values.append(value)

    def image(self) -> np.ndarray:
        out = np.zeros(self.shape)
        for weight, value in zip(self.weights, self.values, strict=True):
            out += weight * value
        return out


def _check_shape(shape: tuple[int, ...], n_dims: int, name: str = "shape") -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if len(shape) != n_dims or min(shape) < 8:
        raise ValueError(f"{name} must be {n_dims} sizes of at least 8, got {shape}")
    return shape


def _head(shape: tuple[int, ...], tissues: tuple[_Tissue, ...], seed: int, texture: bool,
          detail: bool) -> np.ndarray:
    """Render anatomy (jittered by seed), textures and multi-scale detail; float64 in [0, 1]."""
    n_dims = len(shape)
    rng = np.random.default_rng(seed)
    # Seed-dependent pose and size: rotation in-plane, isotropic scale and a small shift.
    angle = rng.uniform(-6.0, 6.0)
    scale = rng.uniform(0.94, 1.03)
    shift = rng.uniform(-0.03, 0.03, size=n_dims)
    rot = _rotation(n_dims, angle)
    grid = _local(_grid(shape), shift, rot)
    grid = [g / scale for g in grid]
    pixel = float(np.mean([2.0 / n for n in shape])) / scale

    painter = _Painter(shape)
    for tissue in tissues:
        value: np.ndarray | float = tissue.value
        if texture and tissue.texture > 0:
            field = power_law_field(shape, rng, exponent=rng.uniform(2.0, 3.0))
            value = tissue.value * (1.0 + tissue.texture * field)
        painter.paint(_ellipsoid(grid, tissue.center, tissue.semi_axes, tissue.angle_deg, pixel), value)

    if detail:
        wm = tissues[_WHITE_MATTER]
        _add_detail(painter, grid, pixel, wm, rng)
    return np.clip(painter.image(), 0.0, 1.0)


def _inside(point: np.ndarray, tissue: _Tissue, margin: float) -> bool:
    u = _rotation(len(point), tissue.angle_deg).T @ (point - np.asarray(tissue.center))
    return float(np.sum((u / (np.asarray(tissue.semi_axes) - margin)) ** 2)) < 1.0


def _random_points(rng: np.random.Generator, tissue: _Tissue, count: int, margin: float) -> list[np.ndarray]:
    """Rejection-sample points well inside a tissue (normalised coordinates)."""
    points: list[np.ndarray] = []
    lo = np.asarray(tissue.center) - np.asarray(tissue.semi_axes)
    hi = np.asarray(tissue.center) + np.asarray(tissue.semi_axes)
    while len(points) < count:
        p = rng.uniform(lo, hi)
        if _inside(p, tissue, margin):
            points.append(p)
    return points


def _add_detail(painter: _Painter, grid: list[np.ndarray], pixel: float, host: _Tissue,
                rng: np.random.Generator) -> None:
    """Lesions of 0.7-4 pixels, thin vessel-like lines and resolution bars (1-3 pixels) inside ``host``."""
    n_dims = len(grid)
    # Lesions: hyper- and hypo-intense dots of several sizes (radius in pixels).
    radii = (0.7, 1.0, 1.5, 2.0, 3.0, 4.0)
    for point in _random_points(rng, host, 3 * len(radii), margin=0.08):
        radius = radii[int(rng.integers(len(radii)))] * pixel
        contrast = rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.4)
        painter.paint(_ellipsoid(grid, point, [radius] * n_dims, 0.0, pixel), host.value + contrast)
    # Vessel-like thin lines, half a pixel to a pixel and a half wide.
    for point in _random_points(rng, host, 6, margin=0.15):
        direction = rng.standard_normal(n_dims)
        direction *= rng.uniform(0.08, 0.2) / np.linalg.norm(direction)
        half_width = rng.uniform(0.25, 0.75) * pixel
        painter.paint(_segment(grid, point - direction, point + direction, half_width, pixel),
                      rng.uniform(0.75, 0.95))
    # Resolution bars: three groups of four bars, bar width = gap = 1, 2, 3 pixels, stacked along y.
    center = _random_points(rng, host, 1, margin=0.3)[0]
    rotation = _rotation(n_dims, rng.uniform(0.0, 180.0))
    offset = -9.0
    for width in (1.0, 2.0, 3.0):
        for bar in range(4):
            along = (offset + (2 * bar + 0.5) * width) * pixel
            local = np.zeros(n_dims)
            local[-1] = along
            half = np.full(n_dims, 5.0 * pixel)
            half[-1] = 0.5 * width * pixel
            painter.paint(_box(grid, center + rotation @ local, half, rotation, pixel), 0.92)
        offset += 8.0 * width + 2.0


def _to_torch(array: np.ndarray, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)


def phantom_2d(shape: tuple[int, int] = (256, 256), seed: int = 0, *, texture: bool = True,
               detail: bool = True, device: torch.device | str = "cpu") -> torch.Tensor:
    """Head-like magnitude image ``[y, x]`` float32 in [0, 1]: anatomy + power-law texture + fine detail.

    ``texture=False, detail=False`` leaves the (anti-aliased, jittered) ellipse anatomy only.
    """
    sizes = _check_shape(shape, 2)
    return _to_torch(_head(sizes, _HEAD_2D, seed, texture, detail), torch.float32, device)


def phantom_3d(shape: tuple[int, int, int] = (64, 64, 64), seed: int = 0, *, texture: bool = True,
               detail: bool = True, device: torch.device | str = "cpu") -> torch.Tensor:
    """Head-like magnitude volume ``[z, y, x]`` float32 in [0, 1]: ellipsoids + 3D texture + fine detail."""
    sizes = _check_shape(shape, 3)
    return _to_torch(_head(sizes, _head_3d(), seed, texture, detail), torch.float32, device)


def smooth_phase(shape: tuple[int, ...], seed: int = 0, max_order: int = 2, amplitude: float = math.pi,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Smooth phase map in radians (float32, any number of dimensions), as B0/receive phase looks.

    A random polynomial of total degree ``1..max_order`` plus a low-pass random field (< 2 cycles per FOV),
    scaled so its variable part spans at most ``[-amplitude, amplitude]``, plus a random constant offset.
    By Markov's inequality its gradient stays below about ``amplitude * max_order**2`` radians per half
    field of view (measured: at most 2.6 pi / n radians per pixel for the defaults).
    """
    shape = tuple(int(n) for n in shape)
    if max_order < 0:
        raise ValueError(f"max_order must be >= 0, got {max_order}")
    rng = np.random.default_rng(seed)
    grid = _grid(shape)
    variable = np.zeros(shape)
    for exponents in np.ndindex(*([max_order + 1] * len(shape))):
        degree = sum(exponents)
        if 1 <= degree <= max_order:
            term = np.ones(shape)
            for g, e in zip(grid, exponents, strict=True):
                term = term * g**e
            variable += rng.standard_normal() / degree * term
    low_pass = power_law_field(shape, rng, exponent=4.0, low_cutoff=1.0, high_cutoff=2.0 / max(shape))
    variable += 0.3 * low_pass
    peak = np.abs(variable).max()
    if peak > 0:
        variable *= amplitude / peak
    phase = variable + rng.uniform(-math.pi, math.pi)
    return _to_torch(phase, torch.float32, device)


def complex_phantom_2d(shape: tuple[int, int] = (256, 256), seed: int = 0,
                       device: torch.device | str = "cpu", *, texture: bool = True,
                       detail: bool = True) -> torch.Tensor:
    """``phantom_2d * exp(i smooth_phase)`` as complex64 ``[y, x]``."""
    magnitude = phantom_2d(shape, seed, texture=texture, detail=detail, device=device)
    return torch.polar(magnitude, smooth_phase(magnitude.shape, seed + 1, device=device))


def complex_phantom_3d(shape: tuple[int, int, int] = (64, 64, 64), seed: int = 0,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """``phantom_3d * exp(i smooth_phase)`` as complex64 ``[z, y, x]``."""
    magnitude = phantom_3d(shape, seed, device=device)
    return torch.polar(magnitude, smooth_phase(magnitude.shape, seed + 1, device=device))
