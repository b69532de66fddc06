"""Multi-level wavelet CNN (Liu et al. 2018/2019) as used as the image net of XPDNet.

Structure (as in the XPDNet reference implementation, batch norm off): ``n_first_convs`` conv-ReLU blocks at
full resolution; then for each scale a Haar DWT (stride 2, the 4 sub-bands stacked as channels) followed by
``n_convs`` conv-ReLU blocks; back up, at each scale ``n_convs`` conv-ReLU blocks whose last one outputs 4x the
next finer scale's channels, an inverse DWT, and a skip connection by addition; finally ``n_first_convs - 1``
conv-ReLU blocks and a linear 3x3 conv (the only conv with a bias; the conv-ReLU blocks have none).

Residual: with ``residual=True`` the net itself adds its input's leading complex channels to its output (see
``models.nets.padding.leading_complex_channels``): for XPDNet, input = ``complex_to_channels([buffer, grad])``
(``2 * (n_primal + 1)`` channels), output = ``2 * n_primal`` channels, and the residual is the buffer part.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from mrdserve.models.nets.padding import check_residual_channels, crop_like, leading_complex_channels, pad_to_multiple

PRESETS: dict[str, dict] = {
    "small": {"filters": [32, 64], "n_convs": 2, "first_filters": 32, "n_first_convs": 2},
    "medium": {"filters": [64, 128, 256], "n_convs": 3, "first_filters": 32, "n_first_convs": 2},
    "big": {"filters": [128, 256, 512], "n_convs": 3, "first_filters": 64, "n_first_convs": 3},
}


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2D Haar DWT: ``[B, C, 2H, 2W]`` -> ``[B, 4C, H, W]`` (sub-bands LL, HL, LH, HH)."""
    even_rows = x[:, :, 0::2] / 2
    odd_rows = x[:, :, 1::2] / 2
    x1 = even_rows[..., 0::2]
    x2 = odd_rows[..., 0::2]
    x3 = even_rows[..., 1::2]
    x4 = odd_rows[..., 1::2]
    low_low = x1 + x2 + x3 + x4
    high_low = -x1 - x2 + x3 + x4
    low_high = -x1 + x2 - x3 + x4
    high_high = x1 - x2 - x3 + x4
    return torch.cat([low_low, high_low, low_high, high_high], dim=1)


def haar_iwt(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``haar_dwt``: ``[B, 4C, H, W]`` -> ``[B, C, 2H, 2W]``."""
    n = x.shape[1] // 4
    x1 = x[:, :n] / 2
    x2 = x[:, n : 2 * n] / 2
    x3 = x[:, 2 * n : 3 * n] / 2
    x4 = x[:, 3 * n :] / 2
    even_even = x1 - x2 - x3 + x4
    odd_even = x1 - x2 + x3 - x4
    even_odd = x1 + x2 - x3 - x4
    odd_odd = x1 + x2 + x3 + x4
    even_rows = torch.stack([even_even, even_odd], dim=-1).flatten(-2)
    odd_rows = torch.stack([odd_even, odd_odd], dim=-1).flatten(-2)
    return torch.stack([even_rows, odd_rows], dim=-2).flatten(-3, -2)


def _conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.ReLU())


def _chain(channels: list[int]) -> nn.Sequential:
    """Conv-ReLU blocks through ``channels[0] -> channels[1] -> ...``."""
    return nn.Sequential(*[_conv_relu(a, b) for a, b in pairwise(channels)])


class MWCNN(nn.Module):
    """Multi-level wavelet CNN on real ``[B, in_channels, H, W]`` -> ``[B, out_channels, H, W]``, any H, W.

    Inputs are zero-padded to a multiple of ``2 ** len(filters)`` (one DWT per scale) and cropped back.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filters: list[int] | None = None,
        n_convs: int = 2,
        residual: bool = True,
        first_filters: int = 32,
        n_first_convs: int = 2,
    ) -> None:
        super().__init__()
        filters = [32, 64] if filters is None else list(filters)
        if not filters:
            raise ValueError("filters: need at least one scale")
        if n_convs < 1 or n_first_convs < 1:
            raise ValueError(f"n_convs ({n_convs}) and n_first_convs ({n_first_convs}) must be >= 1")
        if residual:
            check_residual_channels(in_channels, out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.residual = residual
        self.scale_factor = 2 ** len(filters)
        self.head = _chain([in_channels] + [first_filters] * n_first_convs)
        finer = [first_filters, *filters[:-1]]
        self.down = nn.ModuleList(_chain([4 * finer[i]] + [filters[i]] * n_convs) for i in range(len(filters)))
        # deepest scale first, as the decoder runs
        self.up = nn.ModuleList(_chain([filters[i]] * n_convs + [4 * finer[i]]) for i in reversed(range(len(filters))))
        self.tail = nn.Sequential(
            *[_conv_relu(first_filters, first_filters) for _ in range(n_first_convs - 1)],
            nn.Conv2d(first_filters, out_channels, 3, padding=1, bias=True),
        )

    @classmethod
    def from_preset(cls, name: str, in_channels: int, out_channels: int, residual: bool = True) -> MWCNN:
        """The XPDNet reference sizes: ``small``, ``medium`` or ``big``."""
        if name not in PRESETS:
            raise ValueError(f"preset: unknown MWCNN preset {name!r}, expected one of {sorted(PRESETS)}")
        return cls(in_channels, out_channels, residual=residual, **PRESETS[name])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = pad_to_multiple(x, self.scale_factor, 2)
        first = self.head(padded)
        features: list[torch.Tensor] = []
        current = first
        for block in self.down:
            current = block(haar_dwt(current))
            features.append(current)
        n_scales = len(features)
        for i, block in enumerate(self.up):
            if i > 0:
                current = haar_iwt(current) + features[n_scales - 1 - i]
            current = block(current)
        current = self.tail(haar_iwt(current) + first)
        out = crop_like(current, x, 2)
        if self.residual:
            out = out + leading_complex_channels(x, self.out_channels)
        return out
