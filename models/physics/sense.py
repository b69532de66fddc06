"""Cartesian multicoil SENSE operator: A x = M F (S x), with its adjoint and normal operator.

Layout: images ``[B, (z,) y, x]``, sensitivities ``[B, C, (z,) y, x]``, k-space ``[B, C, (kz,) ky, kx]``.
The mask broadcasts against k-space (e.g. ``[B, 1, ky, 1]`` or ``[ky, kx]``); single-coil data uses maps of
ones. The functional forms wrap the export-safe ``models.physics.kernels`` (which keep a coil axis of size 1)
and stay TorchScript-friendly.
"""

from __future__ import annotations

import torch

from mrdserve.models.physics.kernels import sense_expand, sense_reduce
from mrdserve.models.physics.linop import LinearOperator, Shape


def sense_forward(image: torch.Tensor, smaps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Image ``[B, *spatial]`` -> masked multicoil k-space ``[B, C, *spatial]``."""
    return sense_expand(image.unsqueeze(1), smaps, mask)


def sense_adjoint(kspace: torch.Tensor, smaps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Multicoil k-space ``[B, C, *spatial]`` -> coil-combined image ``[B, *spatial]`` (A^H)."""
    return sense_reduce(kspace, smaps, mask).squeeze(1)


def sense_normal(image: torch.Tensor, smaps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A^H A applied to an image (the mask is applied once: it is assumed binary or a weighting M^H M)."""
    return sense_reduce(sense_expand(image.unsqueeze(1), smaps, None), smaps, mask).squeeze(1)


class SenseOp(LinearOperator):
    """Cartesian SENSE operator bound to sensitivities and a sampling mask.

    Args:
        smaps: complex coil sensitivities ``[B, C, *spatial]`` (2 or 3 spatial dimensions); a batch of 1
            broadcasts over any image batch.
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

    @property
    def _batch(self) -> int | str:
        return "B" if self.smaps.shape[0] == 1 else int(self.smaps.shape[0])

    @property
    def domain_shape(self) -> Shape:
        return (self._batch, *self.image_shape)

    @property
    def range_shape(self) -> Shape:
        return (self._batch, int(self.smaps.shape[1]), *self.image_shape)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``[B, *spatial]`` -> masked k-space ``[B, C, *spatial]``."""
        self.check_domain(image, "image")
        return sense_forward(image, self.smaps, self.mask)

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        """k-space ``[B, C, *spatial]`` -> coil-combined image ``[B, *spatial]``."""
        self.check_range(kspace, "kspace")
        return sense_adjoint(kspace, self.smaps, self.mask)

    def normal(self, image: torch.Tensor) -> torch.Tensor:
        """A^H A x in one pass (equal to adjoint(forward(x)) for a binary mask)."""
        self.check_domain(image, "image")
        return sense_normal(image, self.smaps, self.mask)
