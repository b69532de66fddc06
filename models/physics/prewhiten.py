"""Noise prewhitening: decorrelate receiver channels so each has unit-variance, independent noise.

With noise covariance Psi = L L^H (Cholesky), W = L^{-1} maps correlated noise n to W n with identity
covariance (Pruessmann et al. 2001; Gadgetron's NoiseAdjustGadget does the same).
"""

from __future__ import annotations

import math

import torch


def noise_covariance(noise: torch.Tensor) -> torch.Tensor:
    """Sample covariance ``N N^H / (S - 1)`` of noise ``[C, S]`` (or ``[C, ...]`` flattened), ``[C, C]``."""
    if not torch.is_complex(noise):
        raise TypeError(f"noise must be complex, got {noise.dtype}")
    if noise.dim() < 2:
        raise ValueError(f"noise must be [C, S], got shape {tuple(noise.shape)}")
    samples = noise.reshape(noise.shape[0], -1)
    n_coils, n_samples = samples.shape
    if n_samples < max(2, n_coils):
        raise ValueError(
            f"noise has {n_samples} samples per coil; need at least {max(2, n_coils)} (>= number of coils)"
            " for a full-rank covariance")
    return samples @ samples.conj().transpose(0, 1) / (n_samples - 1)


def noise_bandwidth_scale(acquisition_dwell_time: float, noise_dwell_time: float,
                          receiver_noise_bandwidth: float = 0.793) -> float:
    """Gadgetron's ``noise_bw_scale_factor``: sqrt(2 * acq_dwell / noise_dwell * receiver_noise_bandwidth).

    Corrects for noise scans read with a different dwell time (bandwidth) than the imaging data and for
    the receiver's non-flat response; the factor 2 gives real and imaginary parts unit variance each.
    Returns 1.0 when either dwell time is zero (unknown), as Gadgetron does.
    """
    if acquisition_dwell_time < 0 or noise_dwell_time < 0:
        raise ValueError("dwell times must be non-negative")
    if receiver_noise_bandwidth <= 0:
        raise ValueError(f"receiver_noise_bandwidth must be positive, got {receiver_noise_bandwidth}")
    if acquisition_dwell_time == 0 or noise_dwell_time == 0:
        return 1.0
    return math.sqrt(2.0 * acquisition_dwell_time / noise_dwell_time * receiver_noise_bandwidth)


def prewhitening_matrix(covariance: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """W = scale * L^{-1} with Psi = L L^H, so whitened noise W n has covariance scale^2 * I.

    ``scale`` is 1 for unit-variance complex noise, or ``noise_bandwidth_scale(...)`` to match Gadgetron.
    """
    if covariance.dim() != 2 or covariance.shape[0] != covariance.shape[1]:
        raise ValueError(f"covariance must be a square [C, C] matrix, got shape {tuple(covariance.shape)}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    hermitian = 0.5 * (covariance + covariance.conj().transpose(0, 1))
    factor, info = torch.linalg.cholesky_ex(hermitian)
    if int(info) != 0:
        raise ValueError("noise covariance is not positive definite (dead or duplicated channel?)")
    identity = torch.eye(covariance.shape[0], dtype=factor.dtype, device=factor.device)
    inverse = torch.linalg.solve_triangular(factor, identity, upper=False)
    return inverse * scale


def prewhiten(data: torch.Tensor, W: torch.Tensor, coil_dim: int = 1) -> torch.Tensor:
    """Apply W across the coil dimension of ``data`` (k-space ``[B, C, ...]`` by default)."""
    n_coils = data.shape[coil_dim]
    if W.shape != (n_coils, n_coils):
        raise ValueError(
            f"prewhitening matrix is {tuple(W.shape)} but data has {n_coils} coils along dim {coil_dim}")
    moved = data.movedim(coil_dim, -1)
    whitened = moved @ W.to(device=data.device, dtype=data.dtype).transpose(0, 1)
    return whitened.movedim(-1, coil_dim)
