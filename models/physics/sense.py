"""Cartesian multicoil SENSE operator: A x = M F (S x), with its adjoint and normal operator.

Layout: images ``[B, (z,) y, x]``, sensitivities ``[B, C, (z,) y, x]``, k-space ``[B, C, (kz,) ky, kx]``.
The mask broadcasts against k-space (e.g. ``[B, 1, ky, 1]`` or ``[ky, kx]``); single-coil data uses maps of
ones. The functional forms are TorchScript-friendly so networks can call them inside an exported graph.
"""

from __future__ import annotations

import torch

from mrdserve.models.physics.fft import fftnc, ifftnc


def sense_forward(image: torch.Tensor, smaps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Image ``[B, *spatial]`` -> masked multicoil k-space ``[B, C, *spatial]``."""
    n_spatial = smaps.dim() - 2
    return mask * fftnc(smaps * image.unsqueeze(1), n_spatial)


def sense_adjoint(kspace: torch.Tensor, smaps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Multicoil k-space ``[B, C, *spatial]`` -> coil-combined image ``[B, *spatial]`` (A^H)."""
    n_spatial = smaps.dim() - 2
    return (smaps.conj() * ifftnc(mask * kspace, n_spatial)).sum(dim=1)


def sense_normal(image: torch.Tensor, smaps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A^H A applied to an image (the mask is applied once: it is assumed binary or a weighting M^H M)."""
    n_spatial = smaps.dim() - 2
    return (smaps.conj() * ifftnc(mask * fftnc(smaps * image.unsqueeze(1), n_spatial), n_spatial)).sum(1)


class SenseOp:
    """Cartesian SENSE operator bound to sensitivities and a sampling mask.

    Args:
        smaps: complex coil sensitivities ``[B, C, *spatial]`` (2 or 3 spatial dimensions).
        mask: sampling mask broadcastable to k-space ``[B, C, *spatial]``; bool or real.
    """

    def __init__(self, smaps: torch.Tensor, mask: torch.Tensor) -> None:
        if not torch.is_complex(smaps):
            raise TypeError(f"smaps must be complex, got {smaps.dtype}")
        if smaps.dim() not in (4, 5):
            raise ValueError(f"smaps must be [B, C, (z,) y, x], got shape {tuple(smaps.shape)}")
        self.smaps = smaps
        self.mask = mask.to(device=smaps.device, dtype=smaps.real.dtype)
        self.n_spatial = smaps.dim() - 2

    @classmethod
    def single_coil(cls, image_shape: tuple[int, ...], mask: torch.Tensor, batch: int = 1,
                    dtype: torch.dtype = torch.complex64, device: torch.device | str = "cpu") -> SenseOp:
        """Single-coil operator: sensitivities are maps of ones."""
        smaps = torch.ones((batch, 1, *image_shape), dtype=dtype, device=device)
        return cls(smaps, mask)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.smaps.shape[2:])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return sense_forward(image, self.smaps, self.mask)

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        return sense_adjoint(kspace, self.smaps, self.mask)

    def normal(self, image: torch.Tensor) -> torch.Tensor:
        return sense_normal(image, self.smaps, self.mask)

    __call__ = forward
