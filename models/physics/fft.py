"""Centred orthonormal FFTs (fastMRI convention) over the trailing spatial dimensions.

The zero frequency sits at index ``n // 2`` of each transformed axis, in k-space and in image space.
All functions are TorchScript-friendly and run on any device.
"""

from __future__ import annotations

import torch


def _dims(ndim: int, n_spatial: int) -> list[int]:
    return list(range(ndim - n_spatial, ndim))


def fftnc(x: torch.Tensor, n_spatial: int) -> torch.Tensor:
    """Centred orthonormal forward FFT over the last ``n_spatial`` dimensions (image -> k-space)."""
    dims = _dims(x.dim(), n_spatial)
    x = torch.fft.ifftshift(x, dim=dims)
    x = torch.fft.fftn(x, dim=dims, norm="ortho")
    return torch.fft.fftshift(x, dim=dims)


def ifftnc(x: torch.Tensor, n_spatial: int) -> torch.Tensor:
    """Centred orthonormal inverse FFT over the last ``n_spatial`` dimensions (k-space -> image)."""
    dims = _dims(x.dim(), n_spatial)
    x = torch.fft.ifftshift(x, dim=dims)
    x = torch.fft.ifftn(x, dim=dims, norm="ortho")
    return torch.fft.fftshift(x, dim=dims)


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
