"""Coil-sensitivity refinement by a small complex U-Net, applied to each coil independently.

Reference design (fastmri-reproducible-benchmark, ``CrossDomainNet(refine_smaps=True)`` -> ``UnetComplex``):
U-Net on the real/imaginary channels (2 in, 2 out), 2 conv3x3-LeakyReLU(0.1) per level, max pooling, nearest
upsampling + 2x2 conv, two final 1x1 convs (to max(4, 2) = 4 then 2 channels), all with biases, residual; the
refined maps are divided by their root-sum-of-squares over coils. Small preset ([4, 8, 16]) parameter count:
encoder 76+148 | 296+584 | 1168+2320, decoder up-conv 520 + 1160+584 | 132 + 292+148, head 20+10 = 7,458.
"""

from __future__ import annotations

import torch
from torch import nn

from mrdserve.models.nets.unet import UNet

PRESETS: dict[str, list[int]] = {"small": [4, 8, 16], "big": [8, 16, 32, 64]}


class ComplexUNet(nn.Module):
    """U-Net on complex-as-real images ``[N, *S, 2]`` -> ``[N, *S, 2]`` (view_as_real layout)."""

    def __init__(
        self, filters: list[int], n_convs: int = 2, negative_slope: float = 0.1, residual: bool = True, dim: int = 2
    ) -> None:
        super().__init__()
        self.unet = UNet(2, 2, filters, n_convs, "leaky_relu", negative_slope, residual=residual, dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x.movedim(-1, 1)).movedim(1, -1)


class SensitivityRefiner(nn.Module):
    """Refine coil maps: ``S + U(S)`` per coil, renormalised to unit root-sum-of-squares over coils.

    Forward: real ``[B, C, *S, 2]`` (view_as_real layout, ``dim`` spatial dims) -> the same shape.
    """

    def __init__(self, preset: str = "small", dim: int = 2, eps: float = 1e-12) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"preset: unknown refiner preset {preset!r}, expected one of {sorted(PRESETS)}")
        self.net = ComplexUNet(PRESETS[preset], dim=dim)
        self.eps = eps

    def forward(self, smaps: torch.Tensor) -> torch.Tensor:
        refined = self.net(smaps.flatten(0, 1)).reshape(smaps.shape)
        rss = torch.sqrt((refined * refined).sum(dim=(1, -1), keepdim=True))
        return refined / torch.clamp(rss, min=self.eps)
