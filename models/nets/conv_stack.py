"""The plain CNN block of Cascade-net (Schlemper et al. 2018) and KIKI-net (Eo et al. 2018).

``n_layers`` conv3x3 layers of ``n_filters`` filters, each followed by a ReLU (or a leaky ReLU of slope
``negative_slope``, as the fastMRI reproducible benchmark's KIKI-net has), then a linear conv
(``output_kernel_size``, 3 in the deep cascade, 1 in KIKI-net) back to ``channels`` (real and imaginary parts of one
complex image or k-space). Any residual connection belongs to the network using it. Parameters:
``(9 channels + 1) f + (n_layers - 1) (9 f + 1) f + (k^2 f + 1) channels`` for f filters, output kernel k.

Initialisation (``init``): ``"default"`` is torch's (Cascade-net keeps it). It shrinks the signal's variance about
6-fold per conv-ReLU layer, so a deep stack (KIKI-net's 16-25 layers) starts as a constant function of its input
whose early layers get no gradient. ``"zero-output"`` He-initialises the hidden convs for the activation (variance
kept through depth, zero biases) and zeroes the linear output conv: the stack starts at 0, so a residual block
``x + stack(x)`` starts as the identity and training only adds to what the blocks before it did.
"""

from __future__ import annotations

import torch
from torch import nn

INITS = ("default", "zero-output")


class ConvStack(nn.Module):
    """Real ``[N, channels, *S]`` -> ``[N, channels, *S]`` (2D, same padding)."""

    def __init__(self, channels: int = 2, n_filters: int = 48, n_layers: int = 5, output_kernel_size: int = 3,
                 negative_slope: float = 0.0, init: str = "default") -> None:
        super().__init__()
        if min(channels, n_filters, n_layers) < 1:
            raise ValueError(f"channels ({channels}), n_filters ({n_filters}) and n_layers ({n_layers}) must be >= 1")
        if output_kernel_size < 1 or output_kernel_size % 2 == 0:
            raise ValueError(f"output_kernel_size must be a positive odd number, got {output_kernel_size}")
        if not 0.0 <= negative_slope < 1.0:
            raise ValueError(f"negative_slope must lie in [0, 1), got {negative_slope}")
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        layers: list[nn.Module] = []
        width = channels
        for _ in range(n_layers):
            activation = nn.ReLU() if negative_slope == 0.0 else nn.LeakyReLU(negative_slope)
            layers += [nn.Conv2d(width, n_filters, 3, padding=1), activation]
            width = n_filters
        layers.append(nn.Conv2d(width, channels, output_kernel_size, padding=output_kernel_size // 2))
        self.layers = nn.Sequential(*layers)
        if init == "zero-output":
            self._zero_output_init(negative_slope)

    @torch.no_grad()
    def _zero_output_init(self, negative_slope: float) -> None:
        convs = [m for m in self.layers if isinstance(m, nn.Conv2d)]
        if convs[0].weight.is_meta:  # no values to set (a parameter count); torch's meta init is slow to load
            return
        for conv in convs[:-1]:
            nn.init.kaiming_normal_(conv.weight, a=negative_slope, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(convs[-1].weight)
        nn.init.zeros_(convs[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
