"""The plain CNN block of Cascade-net (Schlemper et al. 2018) and KIKI-net (Eo et al. 2018).

``n_layers`` conv3x3-ReLU layers of ``n_filters`` filters, then a linear conv (``output_kernel_size``, 3 in the
deep cascade, 1 in KIKI-net as in the fastMRI reproducible benchmark) back to ``channels`` (real and imaginary
parts of one complex image or k-space). Any residual connection belongs to the network using it. Parameters:
``(9 channels + 1) f + (n_layers - 1) (9 f + 1) f + (k^2 f + 1) channels`` for f filters, output kernel k.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvStack(nn.Module):
    """Real ``[N, channels, *S]`` -> ``[N, channels, *S]`` (2D, same padding)."""

    def __init__(self, channels: int = 2, n_filters: int = 48, n_layers: int = 5, output_kernel_size: int = 3) -> None:
        super().__init__()
        if min(channels, n_filters, n_layers) < 1:
            raise ValueError(f"channels ({channels}), n_filters ({n_filters}) and n_layers ({n_layers}) must be >= 1")
        if output_kernel_size < 1 or output_kernel_size % 2 == 0:
            raise ValueError(f"output_kernel_size must be a positive odd number, got {output_kernel_size}")
        layers: list[nn.Module] = []
        width = channels
        for _ in range(n_layers):
            layers += [nn.Conv2d(width, n_filters, 3, padding=1), nn.ReLU()]
            width = n_filters
        layers.append(nn.Conv2d(width, channels, output_kernel_size, padding=output_kernel_size // 2))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
