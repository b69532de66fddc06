"""U-Net as in the reference implementation (fastmri-reproducible-benchmark's functional ``unet``).

Per level: ``n_convs`` conv3x3-activation; max (or average) pooling down; up by nearest upsampling followed by
a 2x2 conv with activation (padded at the end, as TensorFlow's ``same`` does for even kernels); skip by
concatenation then ``n_convs`` conv3x3-activation; at the end a 1x1 conv-activation to ``max(4, out)``
channels and a linear 1x1 conv to ``out_channels``. All convs have biases. ``dim=3`` uses 3D convs/pools.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional

from mrdserve.models.nets.padding import check_residual_channels, crop_like, leading_complex_channels, pad_to_multiple


def _conv(dim: int, in_channels: int, out_channels: int, kernel_size: int, padding: int) -> nn.Module:
    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    return conv(in_channels, out_channels, kernel_size, padding=padding)


class _Activation(nn.Module):
    """ReLU or LeakyReLU chosen by name (a module so that Sequential blocks stay scriptable)."""

    def __init__(self, activation: str, negative_slope: float) -> None:
        super().__init__()
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(f"activation: expected 'relu' or 'leaky_relu', got {activation!r}")
        self.negative_slope = negative_slope if activation == "leaky_relu" else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.leaky_relu(x, self.negative_slope)


class _UpConv(nn.Module):
    """Nearest x2 upsampling, end-padding by one, 2x2 (x2) conv and activation."""

    def __init__(self, dim: int, in_channels: int, out_channels: int, act: nn.Module) -> None:
        super().__init__()
        self.dim = dim
        self.conv = _conv(dim, in_channels, out_channels, 2, 0)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.interpolate(x, scale_factor=2.0, mode="nearest")
        x = functional.pad(x, [0, 1] * self.dim)
        return self.act(self.conv(x))


class UNet(nn.Module):
    """U-Net on real ``[B, in_channels, *S]`` -> ``[B, out_channels, *S]`` (S of ``dim`` sizes, any sizes).

    Inputs are zero-padded to a multiple of ``2 ** (len(filters) - 1)`` and cropped back. With ``residual``
    the input's leading complex channels are added to the output (``leading_complex_channels``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filters: list[int] | None = None,
        n_convs: int = 2,
        activation: str = "relu",
        negative_slope: float = 0.1,
        residual: bool = False,
        dim: int = 2,
        pool: str = "max",
    ) -> None:
        super().__init__()
        filters = [16, 32, 64, 128] if filters is None else list(filters)
        if not filters or n_convs < 1:
            raise ValueError(f"filters ({filters}) must be non-empty and n_convs ({n_convs}) >= 1")
        if dim not in (2, 3):
            raise ValueError(f"dim: expected 2 or 3, got {dim}")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool: expected 'max' or 'avg', got {pool!r}")
        if residual:
            check_residual_channels(in_channels, out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.residual = residual
        self.dim = dim
        self.use_max_pool = pool == "max"
        self.scale_factor = 2 ** (len(filters) - 1)

        def act() -> nn.Module:
            return _Activation(activation, negative_slope)

        def chain(channels: list[int]) -> nn.Sequential:
            layers: list[nn.Module] = []
            for a, b in pairwise(channels):
                layers += [_conv(dim, a, b, 3, 1), act()]
            return nn.Sequential(*layers)

        previous = [in_channels, *filters[:-1]]
        self.encoders = nn.ModuleList(chain([previous[i]] + [filters[i]] * n_convs) for i in range(len(filters)))
        # decoder levels from the deepest-but-one up to the finest
        levels = list(reversed(range(len(filters) - 1)))
        self.up_convs = nn.ModuleList(_UpConv(dim, filters[i + 1], filters[i], act()) for i in levels)
        self.decoders = nn.ModuleList(chain([2 * filters[i]] + [filters[i]] * n_convs) for i in levels)
        hidden = max(4, out_channels)
        self.head = nn.Sequential(_conv(dim, filters[0], hidden, 1, 0), act(), _conv(dim, hidden, out_channels, 1, 0))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.dim == 2:
            return functional.max_pool2d(x, 2) if self.use_max_pool else functional.avg_pool2d(x, 2)
        return functional.max_pool3d(x, 2) if self.use_max_pool else functional.avg_pool3d(x, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = pad_to_multiple(x, self.scale_factor, self.dim)
        skips: list[torch.Tensor] = []
        n_levels = len(self.encoders)
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                current = self._pool(current)
            current = encoder(current)
            if i < n_levels - 1:
                skips.append(current)
        for i, (up_conv, decoder) in enumerate(zip(self.up_convs, self.decoders)):  # noqa: B905 - scriptable zip
            current = decoder(torch.cat([skips[n_levels - 2 - i], up_conv(current)], dim=1))
        out = crop_like(self.head(current), x, self.dim)
        if self.residual:
            out = out + leading_complex_channels(x, self.out_channels)
        return out
