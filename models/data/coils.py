"""Synthetic receive coils (2D rings, 3D stacked rings) and receiver noise, white or correlated between coils.

Coil maps: small loops on an ellipse around the field of view (rings at a few z positions in 3D). A loop of
radius rho seen at distance d falls off as the on-axis Biot-Savart field, ``(1 + (d / rho)^2)^(-3/2)``; the
phase combines a per-coil offset, a wavelength-like term growing with distance and a small random gradient.

Normalisation: maps are divided pointwise by their root-sum-of-squares, so ``sum_c |S_c|^2 = 1`` at every
pixel (hence inside the object). Then the RSS of fully sampled coil images equals the object's magnitude and
the SENSE adjoint of fully sampled data returns the image exactly (``sum_c conj(S_c) S_c = 1``), the same
normalisation ESPIRiT-style estimated maps have inside the object.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "add_noise",
    "coil_sensitivities_2d",
    "coil_sensitivities_3d",
    "noise_samples",
    "random_coil_covariance",
    "sigma_for_snr",
]


def _normalised_grid(shape: tuple[int, ...], extent: tuple[float, ...] | None) -> list[np.ndarray]:
    """Coordinates in [-e, e) per axis (e = 1 unless ``extent`` says), broadcastable, array-axis order."""
    extent = (1.0,) * len(shape) if extent is None else tuple(float(e) for e in extent)
    if len(extent) != len(shape) or min(extent) <= 0:
        raise ValueError(f"extent must hold {len(shape)} positive values, got {extent}")
    axes = []
    for axis, (n, e) in enumerate(zip(shape, extent, strict=True)):
        view = [1] * len(shape)
        view[axis] = n
        axes.append((e * (-1.0 + 2.0 * np.arange(n) / n)).reshape(view))
    return axes


def _check(n_coils: int, shape: tuple[int, ...], n_dims: int) -> tuple[int, ...]:
    if int(n_coils) != n_coils or n_coils < 1:
        raise ValueError(f"n_coils must be a positive integer, got {n_coils}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != n_dims or min(shape) < 1:
        raise ValueError(f"shape must be {n_dims} positive sizes, got {shape}")
    return shape


def _default_loop_radius(n_coils_per_ring: int, ellipse: tuple[float, float]) -> float:
    """Loops tile the ring: radius about circumference / (2 n), kept in a plausible range."""
    return float(np.clip(math.pi * float(np.mean(ellipse)) / max(n_coils_per_ring, 1), 0.3, 1.0))


def _maps(grid: list[np.ndarray], centres: np.ndarray, loop_radius: float, rng: np.random.Generator,
          wavelength: float) -> np.ndarray:
    """Un-normalised complex maps ``[C, *shape]`` for coils at ``centres`` ``[C, d]`` (array-axis order)."""
    maps = []
    for centre in centres:
        distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
        magnitude = (1.0 + (distance / loop_radius) ** 2) ** -1.5
        gradient = rng.normal(scale=0.3, size=len(grid))
        phase = (rng.uniform(-math.pi, math.pi) + 2.0 * math.pi * distance / wavelength
                 + sum(k * g for k, g in zip(gradient, grid, strict=True)))
        maps.append(magnitude * np.exp(1j * phase))
    return np.stack(maps)


def _rss_normalise(maps: np.ndarray, device: torch.device | str) -> torch.Tensor:
    rss = np.sqrt(np.sum(np.abs(maps) ** 2, axis=0, keepdims=True))
    return torch.from_numpy(maps / rss).to(device=device, dtype=torch.complex64)


def coil_sensitivities_2d(n_coils: int, shape: tuple[int, int], seed: int | None = None, *,
                          ellipse: tuple[float, float] = (1.05, 0.9), loop_radius: float | None = None,
                          wavelength: float = 4.0, extent: tuple[float, ...] | None = None,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """Complex64 maps ``[C, y, x]`` of ``n_coils`` loops evenly spaced on an ellipse around the FOV.

    ``ellipse`` gives the (y, x) semi-axes of the coil ring in normalised units (the FOV spans [-1, 1));
    ``wavelength`` (same units) sets how fast phase grows with distance from a coil; ``seed`` jitters
    positions and draws phase offsets. ``extent`` (default 1 per axis) is the half-size of the grid in those
    units: ``(1, 2)`` maps a FOV twice as wide along x (readout oversampling) around the same coils.
    RSS over coils is 1 everywhere (see the module docstring).
    A single coil gives maps of ones.
    """
    sizes = _check(n_coils, shape, 2)
    if n_coils == 1:
        return torch.ones((1, *sizes), dtype=torch.complex64, device=device)
    rng = np.random.default_rng(seed)
    angles = 2.0 * math.pi * (np.arange(n_coils) + rng.uniform(-0.1, 0.1, n_coils)) / n_coils
    angles += rng.uniform(0.0, 2.0 * math.pi)
    centres = np.stack([ellipse[0] * np.sin(angles), ellipse[1] * np.cos(angles)], axis=1)
    radius = loop_radius if loop_radius is not None else _default_loop_radius(n_coils, ellipse)
    return _rss_normalise(_maps(_normalised_grid(sizes, extent), centres, radius, rng, wavelength), device)


def coil_sensitivities_3d(n_coils: int, shape: tuple[int, int, int], seed: int | None = None, *,
                          n_rings: int | None = None, ring_extent: float = 0.6,
                          ellipse: tuple[float, float] = (1.05, 0.9), loop_radius: float | None = None,
                          wavelength: float = 4.0, extent: tuple[float, ...] | None = None,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """Complex64 maps ``[C, z, y, x]``: loops on ``n_rings`` rings at z in [-ring_extent, ring_extent].

    By default ``n_rings = clip(n_coils // 4, 1, 4)``; coils are shared out evenly between rings and
    neighbouring rings are staggered in angle. ``extent`` as in 2D. RSS over coils is 1 everywhere.
    """
    sizes = _check(n_coils, shape, 3)
    if n_coils == 1:
        return torch.ones((1, *sizes), dtype=torch.complex64, device=device)
    rings = n_rings if n_rings is not None else int(np.clip(n_coils // 4, 1, 4))
    if not 1 <= rings <= n_coils:
        raise ValueError(f"n_rings must be between 1 and n_coils={n_coils}, got {rings}")
    rng = np.random.default_rng(seed)
    ring_z = np.linspace(-ring_extent, ring_extent, rings) if rings > 1 else np.zeros(1)
    per_ring = np.full(rings, n_coils // rings)
    per_ring[: n_coils % rings] += 1
    centres = []
    for ring, (z, count) in enumerate(zip(ring_z, per_ring, strict=True)):
        stagger = 0.5 * ring
        angles = 2.0 * math.pi * (np.arange(count) + stagger + rng.uniform(-0.1, 0.1, count)) / count
        centres += [(z, ellipse[0] * math.sin(a), ellipse[1] * math.cos(a)) for a in angles]
    radius = loop_radius if loop_radius is not None else _default_loop_radius(int(per_ring.max()), ellipse)
    maps = _maps(_normalised_grid(sizes, extent), np.asarray(centres), radius, rng, wavelength)
    return _rss_normalise(maps, device)


def random_coil_covariance(n_coils: int, correlation: float = 0.2, seed: int | None = None,
                           device: torch.device | str = "cpu") -> torch.Tensor:
    """A plausible receiver noise covariance ``[C, C]`` (complex64, Hermitian positive definite).

    Per-coil noise gains in [0.7, 1.3] and complex coupling of strength ``correlation`` (0 gives a diagonal
    matrix): ``Psi = B B^H`` with ``B = diag(sqrt(g)) (I + correlation * M / sqrt(C))``.
    """
    if n_coils < 1:
        raise ValueError(f"n_coils must be positive, got {n_coils}")
    if not 0.0 <= correlation < 1.0:
        raise ValueError(f"correlation must be in [0, 1), got {correlation}")
    rng = np.random.default_rng(seed)
    gains = rng.uniform(0.7, 1.3, n_coils)
    coupling = (rng.standard_normal((n_coils, n_coils)) + 1j * rng.standard_normal((n_coils, n_coils)))
    coupling *= correlation / math.sqrt(2.0 * n_coils)
    factor = np.sqrt(gains)[:, None] * (np.eye(n_coils) + coupling)
    psi = factor @ factor.conj().T
    return torch.from_numpy(0.5 * (psi + psi.conj().T)).to(device=device, dtype=torch.complex64)


def _cholesky(covariance: torch.Tensor, n_coils: int) -> torch.Tensor:
    if covariance.shape != (n_coils, n_coils):
        raise ValueError(f"covariance must be [{n_coils}, {n_coils}] for {n_coils} coils, "
                         f"got {tuple(covariance.shape)}")
    psi = covariance.to(torch.complex128).cpu()
    factor, info = torch.linalg.cholesky_ex(0.5 * (psi + psi.conj().T))
    if int(info) != 0:
        raise ValueError("covariance must be Hermitian positive definite")
    return factor


def _standard_complex_normal(shape: tuple[int, ...], seed: int | None) -> torch.Tensor:
    """CN(0, 1) samples (E|z|^2 = 1) in complex128 on the CPU: reproducible whatever the target device."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.complex128)


def _correlated_noise(shape: tuple[int, ...], coil_dim: int, sigma: float, covariance: torch.Tensor | None,
                      seed: int | None) -> torch.Tensor:
    """Complex128 CPU noise of ``shape`` with covariance ``sigma^2 * Psi`` across ``coil_dim``."""
    noise = _standard_complex_normal(shape, seed) * sigma
    if covariance is None:
        return noise
    factor = _cholesky(covariance, shape[coil_dim])
    return (noise.movedim(coil_dim, -1) @ factor.T).movedim(-1, coil_dim)


def sigma_for_snr(kspace: torch.Tensor, snr: float, covariance: torch.Tensor | None = None) -> float:
    """Noise std per complex sample giving ``snr`` = RMS of the non-zero (acquired) samples / noise RMS.

    With a covariance Psi the noise RMS per coil is ``sigma * sqrt(mean(diag Psi))``.
    """
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr}")
    acquired = kspace[kspace != 0]
    if acquired.numel() == 0:
        raise ValueError("kspace has no non-zero samples: cannot set noise from an SNR")
    rms = float(acquired.abs().pow(2).mean().sqrt())
    mean_gain = 1.0 if covariance is None else float(torch.diagonal(covariance).real.mean())
    return rms / (snr * math.sqrt(mean_gain))


def add_noise(kspace: torch.Tensor, snr: float | None = None, sigma: float | None = None,
              seed: int | None = None, covariance: torch.Tensor | None = None, coil_dim: int = 1,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Add complex Gaussian receiver noise to ``kspace`` (coils along ``coil_dim``, default ``[B, C, ...]``).

    Give ``sigma`` (std of each complex sample, E|n|^2 = sigma^2 per white coil) or ``snr`` (see
    ``sigma_for_snr``), not both; with only ``covariance`` sigma is 1. The noise covariance across coils is
    ``sigma^2 * covariance`` (identity if None). With ``mask`` (broadcastable) only acquired points get noise,
    so unsampled k-space stays exactly zero.
    """
    if not torch.is_complex(kspace):
        raise TypeError(f"kspace must be complex, got {kspace.dtype}")
    if snr is not None and sigma is not None:
        raise ValueError("give either snr or sigma, not both")
    if snr is None and sigma is None and covariance is None:
        raise ValueError("give snr, sigma or covariance")
    if sigma is None:
        sigma = 1.0 if snr is None else sigma_for_snr(kspace, snr, covariance)
    if sigma < 0:
        raise ValueError(f"sigma must be non-negative, got {sigma}")
    coil_dim = coil_dim % kspace.dim()
    noise = _correlated_noise(tuple(kspace.shape), coil_dim, sigma, covariance, seed)
    noise = noise.to(device=kspace.device, dtype=kspace.dtype)
    if mask is not None:
        noise = noise * mask.to(device=kspace.device, dtype=kspace.real.dtype)
    return kspace + noise


def noise_samples(n_coils: int, n: int, sigma: float = 1.0, covariance: torch.Tensor | None = None,
                  seed: int | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """A noise calibration scan ``[C, n]`` complex64 with covariance ``sigma^2 * covariance``.

    Use the same ``sigma`` and ``covariance`` as ``add_noise`` so prewhitening can be exercised end to end.
    """
    if n_coils < 1 or n < 1:
        raise ValueError(f"n_coils and n must be positive, got {n_coils} and {n}")
    noise = _correlated_noise((n_coils, n), 0, sigma, covariance, seed)
    return noise.to(device=device, dtype=torch.complex64)
