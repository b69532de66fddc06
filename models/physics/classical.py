"""Classical (non-learned) reconstructions: RSS, zero-filled, SENSE adjoint and CG-SENSE.

Tensor-level baselines and fallbacks: Cartesian k-space ``[B, C, (kz,) ky, kx]`` or non-Cartesian samples
``[B, C, K]`` in, images ``[B, *spatial]`` out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mrdserve.models.physics.cg import conjugate_gradient
from mrdserve.models.physics.fft import ifftnc
from mrdserve.models.physics.sense import sense_adjoint, sense_normal

if TYPE_CHECKING:
    from mrdserve.models.physics.nufft import NufftOp


def rss(coil_images: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares over the coil dimension (real, non-negative)."""
    return coil_images.abs().square().sum(dim=dim).sqrt()


def _check_kspace(kspace: torch.Tensor, n_spatial: int | None = None) -> int:
    if not torch.is_complex(kspace):
        raise TypeError(f"kspace must be complex, got {kspace.dtype}")
    if n_spatial is None:
        n_spatial = kspace.dim() - 2
    if n_spatial not in (2, 3) or kspace.dim() != n_spatial + 2:
        raise ValueError(f"kspace must be [B, C, (kz,) ky, kx], got shape {tuple(kspace.shape)}")
    return n_spatial


def _check_smaps(kspace: torch.Tensor, smaps: torch.Tensor) -> None:
    if smaps.shape[0] not in (1, kspace.shape[0]) or tuple(smaps.shape[1:]) != tuple(kspace.shape[1:]):
        raise ValueError(f"smaps shape {tuple(smaps.shape)} does not match kspace {tuple(kspace.shape)}")


def zero_filled_rss(kspace: torch.Tensor, n_spatial: int = 2) -> torch.Tensor:
    """RSS of the inverse FFT of (zero-filled) k-space ``[B, C, *spatial]``: real ``[B, *spatial]``."""
    n_spatial = _check_kspace(kspace, n_spatial)
    return rss(ifftnc(kspace, n_spatial), dim=1)


def cartesian_sense_adjoint(kspace: torch.Tensor, smaps: torch.Tensor,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Coil-combined zero-filled image sum_c conj(S_c) F^H (M y_c): complex ``[B, *spatial]``."""
    _check_kspace(kspace)
    _check_smaps(kspace, smaps)
    if mask is None:
        mask = torch.ones((), dtype=kspace.real.dtype, device=kspace.device)
    return sense_adjoint(kspace, smaps, mask.to(device=kspace.device, dtype=kspace.real.dtype))


def cartesian_cg_sense(kspace: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor, n_iter: int = 10,
                       l2: float = 0.0, tol: float = 1e-6) -> torch.Tensor:
    """CG-SENSE: solve (A^H A + l2 I) x = A^H y with A = M F S; complex ``[B, *spatial]``."""
    _check_kspace(kspace)
    _check_smaps(kspace, smaps)
    weights = mask.to(device=kspace.device, dtype=kspace.real.dtype)
    rhs = sense_adjoint(kspace, smaps, weights)
    return conjugate_gradient(lambda x: sense_normal(x, smaps, weights), rhs, n_iter=n_iter, tol=tol, l2=l2)


def noncartesian_adjoint(data: torch.Tensor, op: NufftOp) -> torch.Tensor:
    """Density-compensated adjoint A^H D y ``[B, *spatial]``, coil-combined with ``op.smaps`` or by RSS.

    Without maps the result is the RSS of the coil images (real values in a complex tensor).
    """
    if op.smaps is not None or data.shape[1] == 1:
        return op.weighted_adjoint(data)
    data = op.weighting.forward(data)
    return rss(op.adjoint_coils(data), dim=1).to(data.dtype)


def noncartesian_cg_sense(data: torch.Tensor, op: NufftOp, n_iter: int = 10, l2: float = 0.0,
                          tol: float = 1e-6) -> torch.Tensor:
    """Density-preconditioned CG-SENSE: solve (A^H D A + l2 I) x = A^H D y with the Toeplitz normal operator.

    Needs ``op.smaps`` for multicoil data (estimate them with ``sensitivities_noncartesian``).
    """
    if op.smaps is None and data.shape[1] != 1:
        raise ValueError(
            f"op.smaps is None but data has {data.shape[1]} coils: CG-SENSE needs coil sensitivities "
            "(estimate them with models.physics.sensitivities.sensitivities_noncartesian)")
    rhs = op.weighted_adjoint(data)
    return conjugate_gradient(op.weighted_normal, rhs, n_iter=n_iter, tol=tol, l2=l2)
