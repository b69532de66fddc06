"""Complex <-> real conversions at the network boundary and inside networks.

Exported networks take and return real tensors: a complex tensor crosses the boundary as its
``torch.view_as_real`` layout (a trailing dimension of 2). Convolutions see real and imaginary parts as
channels: ``[B, n, *S]`` complex <-> ``[B, 2n, *S]`` real, all real parts first, then all imaginary parts.
"""

from __future__ import annotations

import torch


def real_to_complex(x: torch.Tensor) -> torch.Tensor:
    """``[..., 2]`` real (view_as_real layout) -> complex ``[...]``; exporter-friendly (no view_as_complex)."""
    return torch.complex(x[..., 0], x[..., 1])


def complex_to_real(x: torch.Tensor) -> torch.Tensor:
    """Complex ``[...]`` -> real ``[..., 2]`` (view_as_real layout)."""
    return torch.stack([x.real, x.imag], dim=-1)


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``[B, n, *S]`` -> real ``[B, 2n, *S]`` (real parts, then imaginary parts)."""
    return torch.cat([x.real, x.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real ``[B, 2n, *S]`` -> complex ``[B, n, *S]`` (inverse of ``complex_to_channels``)."""
    n = x.shape[1] // 2
    return torch.complex(x[:, :n], x[:, n:])


def magnitude(x: torch.Tensor) -> torch.Tensor:
    """|x| of a complex tensor as sqrt(re^2 + im^2) (ONNX Runtime rejects the graph ``abs`` exports to), with a
    zero gradient where x = 0: there sqrt's infinite derivative times 0 is NaN, and the FFTs of an unrolled
    network spread it to every parameter (a SENSE image is exactly 0 where the sensitivities are)."""
    squared = x.real * x.real + x.imag * x.imag
    nonzero = squared > 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, squared, torch.ones_like(squared))),
                       torch.zeros_like(squared))
