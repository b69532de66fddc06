"""Shape helpers shared by the multiscale networks: pad spatial dims to a multiple, crop back, and pick the
residual channels of a complex-as-channels input."""

from __future__ import annotations

import torch
from torch.nn import functional


def pad_to_multiple(x: torch.Tensor, multiple: int, n_spatial: int) -> torch.Tensor:
    """Zero-pad the last ``n_spatial`` dims of ``x`` at their end up to a multiple of ``multiple``."""
    pad: list[int] = []
    for d in range(n_spatial):
        size = x.shape[x.dim() - 1 - d]
        # ceil(size / multiple) * multiple - size: a form torch.export keeps as ``multiple * q`` with q integer
        pad += [0, (size + multiple - 1) // multiple * multiple - size]
    return functional.pad(x, pad)


def crop_like(x: torch.Tensor, reference: torch.Tensor, n_spatial: int) -> torch.Tensor:
    """Crop the last ``n_spatial`` dims of ``x`` (from their start) to the sizes of ``reference``."""
    for d in range(n_spatial):
        dim = x.dim() - 1 - d
        x = x.narrow(dim, 0, reference.shape[reference.dim() - 1 - d])
    return x


def leading_complex_channels(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """The first ``out_channels // 2`` complex channels of ``x`` in the ``complex_to_channels`` layout.

    ``x`` is ``[B, 2n, *S]`` (n real parts, then n imaginary parts); returns ``[B, out_channels, *S]`` in the
    same layout (returns ``x`` itself when the channel counts agree). Used for residual connections of nets
    whose input holds more complex channels than they output (the XPDNet buffer + gradient).
    """
    in_channels = x.shape[1]
    if in_channels == out_channels:
        return x
    n_in = in_channels // 2
    n_out = out_channels // 2
    return torch.cat([x[:, :n_out], x[:, n_in : n_in + n_out]], dim=1)


def check_residual_channels(in_channels: int, out_channels: int) -> None:
    """Raise ValueError unless a residual over leading complex channels is defined for these counts."""
    if in_channels == out_channels:
        return
    if in_channels % 2 or out_channels % 2 or out_channels > in_channels:
        raise ValueError(
            f"residual: in_channels ({in_channels}) and out_channels ({out_channels}) must be equal, or both even "
            "with out_channels <= in_channels (complex channels as real/imaginary halves)"
        )
