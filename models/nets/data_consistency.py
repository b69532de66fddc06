"""k-space data consistency and the image <-> k-space maps of the Cartesian cross-domain networks.

Data consistency (Schlemper et al., IEEE TMI 2018, eq. 9; Eo et al., MRM 2018) at the sampled points (mask m):
``k = (1 - m) k_net + m (k_net + lambda y) / (1 + lambda)``, with lambda tied to the noise level; lambda -> inf
(noiseless data) replaces the sampled points by the measured ones. Single coil: the image is F^H k. Multicoil:
the image is the SENSE-combined S^H F^H k, the k-space the coil k-spaces F S x, so data consistency acts per coil
(``models.physics.kernels``). Used by ``CascadeNet`` and ``KIKINet``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mrdserve.models.nets.complex import real_to_complex
from mrdserve.models.physics.fft import fftnc, ifftnc
from mrdserve.models.physics.kernels import sense_expand, sense_reduce


class ReplacementConsistency(nn.Module):
    """lambda = inf: ``(1 - m) k_net + m y`` (sampled points replaced by the measured ones)."""

    def forward(self, predicted: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (1.0 - mask) * predicted + mask * measured


class WeightedConsistency(nn.Module):
    """Noise-aware form ``(1 - m) k_net + m (k_net + lambda y) / (1 + lambda)``, lambda > 0 fixed or learned.

    Stored as ``log_lambda`` (a parameter when learned, else a buffer) so lambda stays positive; the weight of
    the measured sample, lambda / (1 + lambda), is ``sigmoid(log_lambda)``.
    """

    def __init__(self, noise_lambda: float, learn: bool) -> None:
        super().__init__()
        if not (noise_lambda > 0 and math.isfinite(noise_lambda)):
            raise ValueError(f"dc_lambda must be a positive finite number (None for replacement), got {noise_lambda}")
        log_lambda = torch.tensor(math.log(noise_lambda), dtype=torch.float32)
        if learn:
            self.log_lambda = nn.Parameter(log_lambda)
        else:
            self.register_buffer("log_lambda", log_lambda)

    def forward(self, predicted: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weight = mask * torch.sigmoid(self.log_lambda)
        return (1.0 - weight) * predicted + weight * measured


def data_consistency(dc_lambda: float | None, learn_lambda: bool) -> nn.Module:
    """The data-consistency layer for ``dc_lambda`` (None: plain replacement, lambda = inf)."""
    if dc_lambda is None:
        if learn_lambda:
            raise ValueError("learn_lambda needs a finite initial dc_lambda (None means lambda = inf, replacement)")
        return ReplacementConsistency()
    return WeightedConsistency(float(dc_lambda), learn_lambda)


def measured_kspace(kspace: torch.Tensor, mask: torch.Tensor,
                    smaps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Complex masked k-space ``[B, C, ky, kx]`` and maps ``[B, C, y, x]`` (or None) from the real inputs.

    ``kspace`` is ``[B, C, ky, kx, 2]`` (or single-coil ``[B, ky, kx, 2]``); without ``smaps`` it must have
    one coil (single-coil form).
    """
    if kspace.dim() == 4:
        kspace = kspace.unsqueeze(1)
    measured = mask * real_to_complex(kspace)
    if smaps is None:
        if kspace.shape[1] != 1:
            raise ValueError("kspace has several coils but no smaps were given: multicoil data need sensitivities")
        return measured, None
    return measured, real_to_complex(smaps)


def kspace_to_image(kspace: torch.Tensor, smaps: torch.Tensor | None) -> torch.Tensor:
    """F^H k (single coil, ``[B, 1, ky, kx]``) or the SENSE combination S^H F^H k: -> image ``[B, 1, y, x]``."""
    if smaps is None:
        return ifftnc(kspace, 2)
    return sense_reduce(kspace, smaps, None)


def image_to_kspace(image: torch.Tensor, smaps: torch.Tensor | None) -> torch.Tensor:
    """F x (single coil) or the coil k-spaces F S x: image ``[B, 1, y, x]`` -> ``[B, C, ky, kx]``."""
    if smaps is None:
        return fftnc(image, 2)
    return sense_expand(image, smaps, None)
