"""Centred orthonormal FFTs (fastMRI convention) over the trailing spatial dimensions.

The zero frequency sits at index ``n // 2`` of each transformed axis, in k-space and in image space.
All functions are TorchScript-friendly and run on any device. The shifts are written as two slices and a
concatenation rather than ``torch.roll``: with a dynamic (symbolic) size the ONNX exporter cannot translate a
roll (it stores the shift in a constant attribute), whereas slices with symbolic bounds export fine.
"""

from __future__ import annotations

import torch


def _dims(ndim: int, n_spatial: int) -> list[int]:
    return list(range(ndim - n_spatial, ndim))


def half_roll(x: torch.Tensor, dim: int, forward: bool) -> torch.Tensor:
    """``fftshift`` (``forward``) or ``ifftshift`` of ``x`` along the non-negative ``dim``, without ``torch.roll``."""
    size = x.shape[dim]
    shift = size // 2 if forward else size - size // 2
    return torch.cat([x.narrow(dim, size - shift, shift), x.narrow(dim, 0, size - shift)], dim=dim)


def _centred(x: torch.Tensor, n_spatial: int, inverse: bool) -> torch.Tensor:
    dims = _dims(x.dim(), n_spatial)
    for dim in dims:
        x = half_roll(x, dim, forward=False)
    x = torch.fft.ifftn(x, dim=dims, norm="ortho") if inverse else torch.fft.fftn(x, dim=dims, norm="ortho")
    for dim in dims:
        x = half_roll(x, dim, forward=True)
    return x


def fftnc(x: torch.Tensor, n_spatial: int) -> torch.Tensor:
    """Centred orthonormal forward FFT over the last ``n_spatial`` dimensions (image -> k-space)."""
    return _centred(x, n_spatial, inverse=False)


def ifftnc(x: torch.Tensor, n_spatial: int) -> torch.Tensor:
    """Centred orthonormal inverse FFT over the last ``n_spatial`` dimensions (k-space -> image)."""
    return _centred(x, n_spatial, inverse=True)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two dimensions."""
    return fftnc(x, 2)


def ifft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D inverse FFT over the last two dimensions."""
    return ifftnc(x, 2)


def fft3c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 3D FFT over the last three dimensions."""
    return fftnc(x, 3)


def ifft3c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 3D inverse FFT over the last three dimensions."""
    return ifftnc(x, 3)
