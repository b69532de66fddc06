"""Synthetic multicoil test object: a textured ellipse with smooth phase and smooth Gaussian-falloff coils."""

from __future__ import annotations

import math

import torch


def coil_phantom(n: int = 64, n_coils: int = 8, dtype: torch.dtype = torch.complex64, width: float = 1.5,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image ``[1, n, n]``, unit-RSS sensitivities ``[1, C, n, n]`` and the object support ``[1, n, n]``."""
    axis = torch.linspace(-1, 1, n, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    support = (x / 0.8) ** 2 + (y / 0.7) ** 2 <= 1
    texture = 1 + 0.5 * torch.cos(3 * x) * torch.sin(2 * y) + 0.3 * ((x - 0.2) ** 2 + y**2 < 0.05)
    image = support * texture * torch.exp(1j * (0.5 * x + 0.3 * y))
    maps = []
    for c in range(n_coils):
        angle = 2 * math.pi * c / n_coils
        centre_y, centre_x = 1.2 * math.sin(angle), 1.2 * math.cos(angle)
        magnitude = torch.exp(-((x - centre_x) ** 2 + (y - centre_y) ** 2) / width)
        phase = angle + 0.8 * (x * math.cos(angle) - y * math.sin(angle))
        maps.append(magnitude * torch.exp(1j * phase))
    smaps = torch.stack(maps)
    smaps = smaps / smaps.abs().square().sum(0).sqrt()
    return image[None].to(dtype), smaps[None].to(dtype), support[None]


def map_similarity(estimate: torch.Tensor, truth: torch.Tensor, support: torch.Tensor) -> float:
    """Mean over ``support`` of |<s_est, s_true>| / (|s_est| |s_true|) per pixel (phase-insensitive)."""
    inner = (estimate.conj() * truth).sum(1).abs()
    norms = estimate.abs().square().sum(1).sqrt() * truth.abs().square().sum(1).sqrt()
    return float((inner / norms.clamp_min(1e-12))[support].mean())


def nrmse(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """||estimate - truth|| / ||truth||."""
    return float((estimate - truth).norm() / truth.norm())
