"""Baselines on the prepared (density-compensated) adjoint image ``[B, *S, 2]`` (view_as_real layout)."""

from __future__ import annotations

import torch
from torch import nn

from mrdserve.models.nets.unet import UNet


def _magnitude_of_real_pair(x: torch.Tensor) -> torch.Tensor:
    """``[..., 2]`` -> ``[...]`` as sqrt(re^2 + im^2) (exports to ONNX, unlike complex ``abs``)."""
    return torch.sqrt(x[..., 0] * x[..., 0] + x[..., 1] * x[..., 1])


class ZeroFilled(nn.Module):
    """No parameters: the magnitude of the adjoint image, ``[B, *S, 2]`` -> ``[B, *S]``."""

    def forward(self, adjoint_image: torch.Tensor) -> torch.Tensor:
        return _magnitude_of_real_pair(adjoint_image)


class UNetBaseline(nn.Module):
    """The thesis baseline: residual U-Net (4 levels, 16 base filters) on the adjoint image's real/imaginary
    channels, output magnitude ``[B, *S, 2]`` -> ``[B, *S]``."""

    def __init__(self, filters: list[int] | None = None, n_convs: int = 2, dim: int = 2) -> None:
        super().__init__()
        self.unet = UNet(2, 2, [16, 32, 64, 128] if filters is None else filters, n_convs, residual=True, dim=dim)

    def forward(self, adjoint_image: torch.Tensor) -> torch.Tensor:
        return _magnitude_of_real_pair(self.unet(adjoint_image.movedim(-1, 1)).movedim(1, -1))
