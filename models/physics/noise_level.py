"""Noise level of measured k-space and the Tikhonov weight it implies.

Prewhitened data have unit noise variance per sample, but data without a noise scan do not, so the level is
estimated from the data itself: the outer readout samples of the acquired lines carry little signal, and for
circular complex Gaussian noise |y|^2 is exponential, so its 10th percentile is sigma^2 (-ln 0.9). A low
percentile keeps the estimate robust to the signal that fine detail and edges still put there.
"""

from __future__ import annotations

import math

import torch

EDGE_DIVISOR = 16  # the outer 1/16 of the readout on each side
EDGE_FRACTION = 1.0 / EDGE_DIVISOR
QUANTILE = 0.1


def edge_width(n_readout: int, divisor: int = EDGE_DIVISOR) -> int:
    """Readout samples on each side that count as the edge: n / divisor rounded (integer maths, so an exported
    graph computes it from a symbolic size), at least 1."""
    return max(1, (n_readout + divisor // 2) // divisor)


def quantile(values: torch.Tensor, q: float) -> float:
    """The ``q`` quantile of all ``values`` (kthvalue: no size limit, unlike torch.quantile's 2^24)."""
    flat = values.reshape(-1).to(torch.float64)
    if flat.numel() == 0:
        raise ValueError("quantile of an empty tensor")
    k = min(flat.numel(), max(1, round(q * flat.numel())))
    return float(flat.kthvalue(k).values)


def _variance_from_power(power: torch.Tensor) -> float:
    power = power[power > 0]
    if power.numel() == 0:
        return 0.0
    return quantile(power, QUANTILE) / -math.log(1.0 - QUANTILE)


def kspace_noise_variance(kspace: torch.Tensor) -> float:
    """Per-sample complex noise variance of Cartesian k-space ``[..., kx]`` from its outer readout samples.

    Unsampled (exactly zero) samples are ignored; returns 0.0 when no sample is left (e.g. noiseless data).
    """
    n_kx = kspace.shape[-1]
    width = edge_width(n_kx)
    edges = torch.cat([kspace[..., :width], kspace[..., n_kx - width:]], dim=-1)
    return _variance_from_power(edges.abs().square().reshape(-1))


def samples_noise_variance(data: torch.Tensor, trajectory: torch.Tensor) -> float:
    """Noise variance of non-Cartesian samples ``[..., K]`` from those farthest out in k-space (outer 1/16)."""
    radius = trajectory.square().sum(0).sqrt()
    threshold = quantile(radius, 1.0 - EDGE_FRACTION)
    return _variance_from_power(data[..., radius >= threshold].abs().square().reshape(-1))


def tikhonov_weight(noise_variance: float, image: torch.Tensor, floor: float = 1e-6) -> float:
    """MAP weight sigma^2 / s^2 of ||x||^2 for an image prior of power s^2 (the mean |x|^2 of ``image``).

    With orthonormal operators this is the Wiener choice: negligible at high SNR, strong where the coil
    geometry amplifies noise (few coils, high acceleration). ``floor`` keeps the system well posed.
    """
    power = float(image.abs().square().mean())
    if power <= 0.0:
        return floor
    return max(noise_variance / power, floor)
