"""Classical reference reconstruction per task: the baseline every learned model must beat and the runtime's
fallback when no artifact fits.

- Cartesian, fully sampled or without calibration data: zero-filled root-sum-of-squares ("rss").
- Cartesian, undersampled multicoil with ACS lines: CG-SENSE with ESPIRiT sensitivities from the ACS.
- Non-Cartesian: density-compensated adjoint ("adjoint"), or density-preconditioned CG-SENSE with
  sensitivities from the central samples for undersampled multicoil data.
Images come back as magnitudes cropped to the header's recon matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.data.sample import KSpaceSample
from models.physics.classical import (
    cartesian_cg_sense,
    noncartesian_cg_sense,
    rss,
)
from models.physics.density import normalise_density, pipe_menon_density
from models.physics.espirit import espirit
from models.physics.fft import ifftnc
from models.physics.nufft import NufftOp
from models.physics.sensitivities import sensitivities_noncartesian

METHODS = ("auto", "rss", "adjoint", "cg-sense")


@dataclass
class ClassicalResult:
    """A magnitude image ``[(z,) y, x]`` in recon space and the method that made it."""

    image: torch.Tensor
    method: str


def center_crop(image: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Crop the trailing dimensions of ``image`` to ``shape`` around the centre (no-op where already smaller)."""
    slices = [slice(None)] * (image.dim() - len(shape))
    for size, target in zip(image.shape[-len(shape):], shape, strict=True):
        start = max((size - target) // 2, 0)
        slices.append(slice(start, start + min(size, target)))
    return image[tuple(slices)]


def _choose(sample: KSpaceSample, method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown classical method {method!r}; choose one of {', '.join(METHODS)}")
    if method != "auto":
        if method in ("rss", "adjoint"):  # the same idea: the plain (density-compensated) adjoint, RSS-combined
            return "rss" if sample.is_cartesian else "adjoint"
        return method
    if sample.is_cartesian:
        undersampled = sample.mask is not None and not bool(sample.mask.all())
        has_acs = sample.acs_mask is not None and bool(sample.acs_mask.any())
        return "cg-sense" if undersampled and has_acs and sample.n_coils > 1 else "rss"
    return "cg-sense" if sample.n_coils > 1 else "adjoint"


def _cartesian(sample: KSpaceSample, method: str, device: torch.device, n_iter: int) -> torch.Tensor:
    kspace = sample.kspace.to(device).unsqueeze(0)
    if method == "rss":
        return rss(ifftnc(kspace, sample.n_spatial), dim=1)[0]
    if sample.acs_mask is None or not bool(sample.acs_mask.any()):
        raise ValueError("CG-SENSE needs calibration (ACS) lines to estimate coil sensitivities; none found")
    mask = (sample.mask if sample.mask is not None else (kspace.abs().sum(1) > 0)).to(device)
    smaps = espirit(kspace, sample.acs_mask.to(device))
    return cartesian_cg_sense(kspace, mask, smaps, n_iter=n_iter)[0].abs()


def _noncartesian(sample: KSpaceSample, method: str, device: torch.device, n_iter: int) -> torch.Tensor:
    trajectory = sample.trajectory.to(device)
    if sample.density is None:
        density = pipe_menon_density(trajectory, sample.matrix, device=device)
    else:  # the acquisition's own weights (e.g. ISMRMRD's third trajectory column) come in any scale
        density = normalise_density(sample.density.to(device), trajectory, sample.matrix)
    data = sample.kspace.to(device).unsqueeze(0)
    coil_op = NufftOp(trajectory, sample.matrix, density=density.to(device))
    if method == "adjoint":
        return rss(coil_op.adjoint_coils(data * coil_op.density), dim=1)[0]
    if sample.n_coils == 1:
        return noncartesian_cg_sense(data, coil_op, n_iter=n_iter)[0].abs()
    smaps = sensitivities_noncartesian(data, coil_op)
    op = NufftOp(trajectory, sample.matrix, smaps=smaps, density=coil_op.density)
    return noncartesian_cg_sense(data, op, n_iter=n_iter)[0].abs()


def classical_reconstruction(sample: KSpaceSample, method: str = "auto", device: str | torch.device = "cpu",
                             n_iter: int = 15) -> ClassicalResult:
    """Reconstruct one sample with the classical baseline of its task (see the module docstring)."""
    chosen = _choose(sample, method)
    device = torch.device(device)
    with torch.no_grad():
        if sample.is_cartesian:
            image = _cartesian(sample, chosen, device, n_iter)
        else:
            image = _noncartesian(sample, chosen, device, n_iter)
    return ClassicalResult(image=center_crop(image, sample.recon_matrix), method=chosen)
