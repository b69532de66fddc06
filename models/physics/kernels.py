"""The one definition of the SENSE expand/reduce and the Toeplitz product, in export-safe forms.

Every function here is plain torch (centred FFTs, pointwise products, sums, narrowing): TorchScript scripts it and
the ONNX exporter translates it, so the networks call these inside their exported graphs and the physics
operators (``sense``, ``nufft``, ``toeplitz``) are built on them. The complex forms keep the coil axis (size 1
for an image, ``[B, 1, *S]``): the ONNX exporter has no complex unsqueeze or select. The ``*_channels`` forms do
the same maths on separate real and imaginary tensors, for graphs the exporter sees (it handles complex FFTs but
not complex padding or products); ``tests/physics/test_kernels.py`` checks each equals its complex form.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from mrdserve.models.physics.fft import fftnc, ifftnc
from mrdserve.models.physics.noise_level import QUANTILE, edge_width


def expand_coils(image: torch.Tensor, smaps: torch.Tensor) -> torch.Tensor:
    """Coil images S_c x: ``image [B, 1, *S]`` times sensitivities ``[B, C, *S]`` -> ``[B, C, *S]``."""
    return smaps * image


def combine_coils(coil_images: torch.Tensor, smaps: torch.Tensor) -> torch.Tensor:
    """sum_c conj(S_c) x_c keeping the coil axis: ``[B, C, *S]`` -> ``[B, 1, *S]`` (adjoint of ``expand_coils``)."""
    return (smaps.conj() * coil_images).sum(dim=1, keepdim=True)


def sense_expand(image: torch.Tensor, smaps: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """SENSE A = M F S: image ``[B, 1, *S]`` -> coil k-space ``[B, C, *S]`` (mask None: unmasked F S x).

    ``smaps [B, C, *S]`` sets the number of spatial dimensions; the mask broadcasts against k-space.
    """
    kspace = fftnc(expand_coils(image, smaps), smaps.dim() - 2)
    if mask is None:
        return kspace
    return mask * kspace


def sense_reduce(kspace: torch.Tensor, smaps: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """SENSE A^H = S^H F^H M: coil k-space ``[B, C, *S]`` -> image ``[B, 1, *S]`` (mask None: unmasked)."""
    if mask is not None:
        kspace = mask * kspace
    return combine_coils(ifftnc(kspace, smaps.dim() - 2), smaps)


def sense_gradient(image: torch.Tensor, measured: torch.Tensor, smaps: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Gradient A^H (A x - y) of the SENSE data term at ``image [B, 1, *S]`` (same shape out)."""
    return sense_reduce(sense_expand(image, smaps, mask) - measured, smaps, mask)


def _real_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample Re<a, b> of complex ``[B, ...]`` tensors, shape ``[B, 1, ..., 1]`` like ``a``."""
    product = a.real * b.real + a.imag * b.imag
    return product.reshape(product.shape[0], -1).sum(dim=1).reshape([-1] + [1] * (a.dim() - 1))


def edge_noise_variance(kspace: torch.Tensor, mask: torch.Tensor, quantile: float = QUANTILE) -> torch.Tensor:
    """Per-sample complex noise variance ``[B, 1, 1, 1]`` of ``kspace [B, C, ky, kx]`` (``mask [B, 1, ky, kx]``,
    1 where measured) from the measured samples of the outer readout: the estimator of
    ``noise_level.kspace_noise_variance`` (a low quantile of |y|^2 over -ln(1 - q)) in export-safe form (a sort
    and a gather instead of kthvalue); 0 where no sample was measured there."""
    n_kx = kspace.shape[-1]
    width = edge_width(n_kx)
    power = kspace.real * kspace.real + kspace.imag * kspace.imag
    edges = torch.cat([power.narrow(-1, 0, width), power.narrow(-1, n_kx - width, width)], dim=-1)
    measured = torch.cat([mask.narrow(-1, 0, width), mask.narrow(-1, n_kx - width, width)], dim=-1)
    measured = (measured > 0).expand(edges.shape).reshape(edges.shape[0], -1)
    values = torch.where(measured, edges.reshape(edges.shape[0], -1), torch.full_like(measured, 3.0e38,
                                                                                          dtype=power.dtype))
    ordered = torch.sort(values, dim=1).values
    count = measured.sum(dim=1)
    index = (torch.round(quantile * count.to(power.dtype)).long() - 1).clamp_min(0)
    picked = ordered.gather(1, index.reshape(-1, 1)).reshape(-1)
    variance = torch.where(count > 0, picked / -math.log(1.0 - quantile), torch.zeros_like(picked))
    return variance.reshape(-1, 1, 1, 1)


def sense_cg(rhs: torch.Tensor, smaps: torch.Tensor, mask: torch.Tensor, l2: torch.Tensor,
             n_iter: int) -> torch.Tensor:
    """Tikhonov-regularised SENSE by ``n_iter`` conjugate-gradient steps: (A^H A + l2 I) x = rhs from x = 0.

    ``rhs [B, 1, *S]`` (usually A^H y), ``l2 [B, 1, ..., 1]`` per sample. A fixed number of steps and no
    data-dependent branch, so TorchScript scripts it, the ONNX exporter unrolls it and autograd runs through it;
    a converged (or all-zero) sample takes zero steps instead of dividing by zero.
    """
    floor = 1e-30
    x = rhs * 0.0  # not zeros_like: the ONNX exporter has no complex zeros_like
    residual = rhs
    direction = rhs
    power = _real_inner(residual, residual)
    for _ in range(n_iter):
        product = sense_reduce(sense_expand(direction, smaps, mask), smaps, mask) + l2 * direction
        curvature = _real_inner(direction, product)
        alpha = torch.where(curvature > floor, power / curvature.clamp_min(floor), torch.zeros_like(power))
        x = x + alpha * direction
        residual = residual - alpha * product
        new_power = _real_inner(residual, residual)
        beta = torch.where(power > floor, new_power / power.clamp_min(floor), torch.zeros_like(power))
        direction = residual + beta * direction
        power = new_power
    return x


def sense_fit_noise_variance(kspace: torch.Tensor, smaps: torch.Tensor, mask: torch.Tensor,
                             n_iter: int) -> torch.Tensor:
    """Per-sample complex noise variance ``[B, 1, 1, 1]`` from the misfit of a least-squares SENSE fit: the
    residual ||A x - y||^2 of ``n_iter`` CG steps over its degrees of freedom (measured samples times coils minus
    the pixels the sensitivities cover). Unlike the readout-edge estimate it is not fooled by signal that reaches
    the edge of k-space (noiseless or sharp-edged objects give ~0); an unconverged fit or wrong sensitivities make it
    an upper bound. ``kspace, smaps [B, C, ky, kx]`` complex, ``mask [B, 1, ky, kx]``."""
    rhs = sense_reduce(kspace, smaps, mask)
    fit = sense_cg(rhs, smaps, mask, torch.full_like(rhs.real.narrow(2, 0, 1).narrow(3, 0, 1), 1e-6), n_iter)
    residual = sense_expand(fit, smaps, mask) - kspace
    misfit = (residual.real * residual.real + residual.imag * residual.imag).reshape(kspace.shape[0], -1).sum(dim=1)
    measured = mask.reshape(mask.shape[0], -1).sum(dim=1) * kspace.shape[1]
    covered = ((smaps.real * smaps.real + smaps.imag * smaps.imag).sum(dim=1) > 0.5).reshape(smaps.shape[0], -1)
    dof = (measured - covered.sum(dim=1).to(measured.dtype)).clamp_min(1.0)
    return (misfit / dof).reshape(-1, 1, 1, 1)


def toeplitz_product(image: torch.Tensor, kernel: torch.Tensor, n_spatial: int,
                     in_place: bool = False) -> torch.Tensor:
    """Toeplitz-embedded convolution A^H W A x over the last ``n_spatial`` dims of ``image [..., *S]``.

    The image is zero-padded to the kernel's grid (the FFT's ``s=``), multiplied by the kernel ``[..., *2S]``
    (from ``toeplitz.toeplitz_kernel``; it broadcasts against the padded spectrum) and cropped back to S.
    ``in_place`` reuses the padded spectrum for the product and the inverse FFT (one grid-sized buffer instead of
    two; the result has the image's dtype): only where no gradient is needed, as autograd cannot record it.
    """
    dims: list[int] = []
    padded: list[int] = []
    for i in range(n_spatial):
        dims.append(image.dim() - n_spatial + i)
        padded.append(kernel.shape[kernel.dim() - n_spatial + i])
    spectrum = torch.fft.fftn(image, s=padded, dim=dims)
    if in_place:
        spectrum.mul_(kernel)
        result = torch.fft.ifftn(spectrum, dim=dims, out=spectrum)
    else:
        result = torch.fft.ifftn(spectrum * kernel, dim=dims)
    for i in range(n_spatial):
        result = result.narrow(dims[i], 0, image.shape[dims[i]])
    return result


def expand_coils_channels(re: torch.Tensor, im: torch.Tensor, smaps_re: torch.Tensor,
                          smaps_im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``expand_coils`` on real and imaginary parts: image ``[B, 1, *S]`` -> coil images ``[B, C, *S]``."""
    return smaps_re * re - smaps_im * im, smaps_re * im + smaps_im * re


def combine_coils_channels(re: torch.Tensor, im: torch.Tensor, smaps_re: torch.Tensor,
                           smaps_im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``combine_coils`` on real and imaginary parts: coil images ``[B, C, *S]`` -> ``[B, 1, *S]``."""
    return ((smaps_re * re + smaps_im * im).sum(dim=1, keepdim=True),
            (smaps_re * im - smaps_im * re).sum(dim=1, keepdim=True))


def toeplitz_product_channels(re: torch.Tensor, im: torch.Tensor, kernel_re: torch.Tensor, kernel_im: torch.Tensor,
                              n_spatial: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``toeplitz_product`` of ``re + i im [..., *S]`` with complex tensors only around the FFTs.

    Real padding and real products instead of the FFT's ``s=`` and a complex product: the form the ONNX
    exporter translates.
    """
    dims: list[int] = []
    pad: list[int] = []
    for i in range(n_spatial):
        dims.append(re.dim() - n_spatial + i)
    for i in range(n_spatial - 1, -1, -1):
        size = re.shape[dims[i]]
        pad.extend([0, kernel_re.shape[kernel_re.dim() - n_spatial + i] - size])
    spectrum = torch.fft.fftn(torch.complex(functional.pad(re, pad), functional.pad(im, pad)), dim=dims)
    product_re = spectrum.real * kernel_re - spectrum.imag * kernel_im
    product_im = spectrum.real * kernel_im + spectrum.imag * kernel_re
    result = torch.fft.ifftn(torch.complex(product_re, product_im), dim=dims)
    out_re = result.real
    out_im = result.imag
    for i in range(n_spatial):
        out_re = out_re.narrow(dims[i], 0, re.shape[dims[i]])
        out_im = out_im.narrow(dims[i], 0, re.shape[dims[i]])
    return out_re, out_im
