"""Classical reconstruction per task: the baseline every learned model must beat and the runtime's fallback.

Methods (``METHODS``; "auto" picks per sample):
- ``rss``: coil combination of the inverse FFT (exact for fully sampled Cartesian data; "adjoint" is its
  density-compensated non-Cartesian form).
- ``cg-sense``: SENSE by conjugate gradients with a Tikhonov weight from the noise level (unit variance for
  prewhitened data, else estimated from the outer readout samples), ESPIRiT maps from the calibration lines.
- ``grappa``: GRAPPA kernels from the calibration lines, then RSS (2D Cartesian).
- ``l1-wavelet``: l1-wavelet compressed sensing with SENSE (Cartesian) or the Toeplitz normal operator
  (non-Cartesian), 2D.
Calibration lines are the ACS-flagged lines or, without flags, the contiguous fully sampled centre of the mask;
fully sampled data are their own calibration, and "auto" combines their coils (never fails).
Images come back as magnitudes cropped to the header's recon matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.physics.cg import conjugate_gradient
from mrdserve.models.physics.classical import rss
from mrdserve.models.physics.compressed_sensing import DEFAULT_RELATIVE_LAMBDA, l1_wavelet
from mrdserve.models.physics.density import normalise_density, pipe_menon_density
from mrdserve.models.physics.espirit import espirit
from mrdserve.models.physics.fft import ifftnc
from mrdserve.models.physics.grappa import grappa_rss
from mrdserve.models.physics.noise_level import kspace_noise_variance, samples_noise_variance, tikhonov_weight
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.prepare_cartesian import acs_from_mask
from mrdserve.models.physics.sense import sense_adjoint, sense_normal
from mrdserve.models.physics.sensitivities import sensitivities_noncartesian

METHODS = ("auto", "rss", "adjoint", "cg-sense", "grappa", "l1-wavelet")
# the concrete methods per kind of data (what benchmarks and the validation envelope compare against)
CLASSICAL_METHODS = {"cartesian": ("rss", "cg-sense", "grappa", "l1-wavelet"),
                     "noncartesian": ("adjoint", "cg-sense", "l1-wavelet")}
AUTO_ACCELERATED = "l1-wavelet"  # the strongest classical method on the quality benchmark (bench/quality.py)
MIN_CALIBRATION_LINES = 8
# CG-SENSE's Tikhonov weight: three times the Wiener weight sigma^2 / mean|x|^2 (best of 1-30x on 2-coil R=2 data
# at 5% noise, within 0.1 dB of the best at 1% noise with 8 coils)
TIKHONOV_FACTOR = 3.0


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


def sampled_lines(sample: KSpaceSample) -> torch.Tensor:
    """Bool ``[(kz,) ky]``: the phase-encoding lines with any acquired sample (Cartesian)."""
    grid = tuple(sample.kspace.shape[1:])
    if sample.mask is None:
        return (sample.kspace.abs().sum(0) > 0).any(-1)
    return torch.broadcast_to(sample.mask.bool(), grid).any(-1)


def calibration_lines(sample: KSpaceSample) -> torch.Tensor | None:
    """Bool ``[(kz,) ky]`` calibration lines: ACS flags, else the fully sampled centre; None when too few."""
    lines = sampled_lines(sample)
    if sample.acs_mask is not None and bool(sample.acs_mask.any()):
        acs = torch.broadcast_to(sample.acs_mask.bool(), tuple(sample.kspace.shape[1:])).any(-1) & lines
        if bool(acs[tuple(n // 2 for n in acs.shape)]):
            return acs  # flags that miss the k-space centre are not usable: detect from the mask instead
    if lines.dim() != 1:  # 3D without flags: the whole grid only when fully sampled
        return lines if bool(lines.all()) else None
    try:
        acs = acs_from_mask(lines[None, None, :, None])[0, 0, :, 0]  # the contiguous run around ky // 2
    except ValueError:  # the centre line is not acquired
        return None
    return acs if int(acs.sum()) >= min(MIN_CALIBRATION_LINES, lines.numel()) else None


def is_fully_sampled(sample: KSpaceSample) -> bool:
    """Every Cartesian phase-encoding line acquired (R = 1)."""
    return sample.is_cartesian and bool(sampled_lines(sample).all())


def check_method(method: str) -> str:
    """``method`` if it is a classical method name; ValueError listing the names otherwise."""
    if method not in METHODS:
        raise ValueError(f"unknown classical method {str(method)[:100]!r}; choose one of {', '.join(METHODS)}")
    return method


def _choose(sample: KSpaceSample, method: str) -> str:
    check_method(method)
    if method in ("rss", "adjoint"):  # the same idea: the plain (density-compensated) adjoint, coil-combined
        return "rss" if sample.is_cartesian else "adjoint"
    if method != "auto":
        return method
    if sample.is_cartesian:
        if is_fully_sampled(sample) or sample.n_coils == 1 or calibration_lines(sample) is None:
            return "rss"
        return AUTO_ACCELERATED if sample.n_spatial == 2 else "cg-sense"
    if sample.n_coils == 1 and sample.n_spatial != 2:
        return "adjoint"
    return AUTO_ACCELERATED if sample.n_spatial == 2 else "cg-sense"


def _check_applicable(sample: KSpaceSample, method: str) -> None:
    """ValueError naming why ``method`` cannot reconstruct ``sample`` (checked before any work is done)."""
    if method == "grappa" and not sample.is_cartesian:
        raise ValueError("grappa needs Cartesian data; use cg-sense or l1-wavelet for non-Cartesian data")
    if method in ("grappa", "l1-wavelet") and sample.n_spatial != 2:
        raise ValueError(f"{method} reconstructs 2D slices; use cg-sense for 3D data")


def _solve(method: str, normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, noise_variance: float,
           n_iter: int) -> torch.Tensor:
    """The regularised inverse problem (A^H A, A^H y) by l1-wavelet FISTA or Tikhonov CG: magnitude."""
    if method == "l1-wavelet":
        return l1_wavelet(normal, rhs, DEFAULT_RELATIVE_LAMBDA, noise_std=noise_variance ** 0.5)[0].abs()
    l2 = TIKHONOV_FACTOR * tikhonov_weight(noise_variance, rhs)
    return conjugate_gradient(normal, rhs, n_iter=n_iter, l2=l2)[0].abs()


def _line_mask(lines: torch.Tensor) -> torch.Tensor:
    """Lines ``[(kz,) ky]`` as a mask broadcastable to k-space ``[B, C, (kz,) ky, kx]``."""
    return lines[..., None]


def _cartesian(sample: KSpaceSample, method: str, device: torch.device, n_iter: int) -> torch.Tensor:
    kspace = sample.kspace.to(device).unsqueeze(0)
    if method == "rss":
        return rss(ifftnc(kspace, sample.n_spatial), dim=1)[0]
    acs = calibration_lines(sample)
    if acs is None:
        raise ValueError(f"{method} needs calibration lines: flag ACS lines or acquire at least "
                         f"{MIN_CALIBRATION_LINES} contiguous lines at the centre of k-space")
    lines = sampled_lines(sample).to(device)
    acs = acs.to(device)
    if method == "grappa":
        return grappa_rss(kspace[0], lines, acs)
    mask = _line_mask(lines).to(kspace.real.dtype)
    smaps = espirit(kspace, _line_mask(acs))
    rhs = sense_adjoint(kspace, smaps, mask)

    def normal(x: torch.Tensor) -> torch.Tensor:
        return sense_normal(x, smaps, mask)

    noise = 1.0 if sample.prewhitened else kspace_noise_variance(kspace[0][:, lines])
    return _solve(method, normal, rhs, noise, n_iter)


def _noncartesian(sample: KSpaceSample, method: str, device: torch.device, n_iter: int) -> torch.Tensor:
    if sample.trajectory is None:
        raise ValueError(f"{method}: a non-Cartesian reconstruction needs the sample's trajectory")
    trajectory, key = sample.trajectory.to(device), sample.trajectory_key  # hashed once per sample
    if sample.density is None:
        density = pipe_menon_density(trajectory, sample.matrix, device=device, trajectory_key=key)
    else:  # the acquisition's own weights (e.g. ISMRMRD's third trajectory column) come in any scale
        density = normalise_density(sample.density.to(device), trajectory, sample.matrix, trajectory_key=key)
    density = density.to(device)  # the weights both operators below hold
    data = sample.kspace.to(device).unsqueeze(0)
    coil_op = NufftOp(trajectory, sample.matrix, density=density, trajectory_key=key)
    if method == "adjoint":
        return rss(coil_op.adjoint_coils(data * density), dim=1)[0]
    smaps = None if sample.n_coils == 1 else sensitivities_noncartesian(data, coil_op)
    op = NufftOp(trajectory, sample.matrix, smaps=smaps, density=density, trajectory_key=key)
    rhs = op.weighted_adjoint(data)

    def normal(x: torch.Tensor) -> torch.Tensor:
        return op.weighted_normal(x)

    noise = 1.0 if sample.prewhitened else samples_noise_variance(data[0], trajectory)
    # Weighted least squares: the residual's noise is scaled by the density weights, on average by their median.
    return _solve(method, normal, rhs, noise * float(density.median()), n_iter)


def classical_reconstruction(sample: KSpaceSample, method: str = "auto", device: str | torch.device = "cpu",
                             n_iter: int = 15, preferred: str | None = None) -> ClassicalResult:
    """Reconstruct one sample with ``method`` (see the module docstring); "auto" picks the task's best.

    ``preferred``: with "auto", try this method first (the winner of the artifact's validation cell for these
    data) and make the automatic choice where it does not apply. Fully sampled data are always coil-combined
    ("rss"): the exact reconstruction of what was acquired.
    """
    if method == "auto" and preferred not in (None, "auto") and not is_fully_sampled(sample):
        try:
            return classical_reconstruction(sample, check_method(preferred), device, n_iter)
        except ValueError:
            pass
    chosen = _choose(sample, method)
    _check_applicable(sample, chosen)
    device = torch.device(device)
    with torch.no_grad():
        if sample.is_cartesian:
            image = _cartesian(sample, chosen, device, n_iter)
        else:
            image = _noncartesian(sample, chosen, device, n_iter)
    return ClassicalResult(image=center_crop(image, sample.recon_matrix), method=chosen)
