"""Toeplitz embedding of the NUFFT normal operator: A^H W A x as a zero-padded FFT convolution on the 2N grid.

For the orthonormal NUFFT of ``models.physics.nufft``, ``(A^H W A x)_n = prod(N)^-1 sum_m psf(n - m) x_m``
with ``psf(m) = sum_k w_k exp(i omega_k . m)``. The kernel is the FFT (torch default scaling) of the PSF on
``m in [-N, N)`` per axis stored in FFT order, divided by ``prod(N)``; the ``m = -N`` planes are never used by
the linear convolution and are set to zero, which makes the kernel Hermitian-symmetric (real for real w).
``toeplitz_apply`` is plain torch (FFT + pointwise, through ``kernels.toeplitz_product``) and scriptable.
"""

from __future__ import annotations

import math

import torch

from mrdserve.models.physics.kernels import toeplitz_product


def toeplitz_apply(image: torch.Tensor, kernel: torch.Tensor, chunk_elements: int = 1 << 23) -> torch.Tensor:
    """A^H W A of ``image [..., *N]`` with ``kernel [*2N]`` from ``toeplitz_kernel``; same shape out.

    ``kernels.toeplitz_product`` on the leading images in chunks of about ``chunk_elements`` padded values (64 MB
    complex64 by default: the 16 coils of one 320^2 slice in one call, a batch of 4 slices in four) to bound the
    temporaries, in place unless a gradient is needed.
    """
    n_spatial = kernel.dim()
    flat_shape: list[int] = [-1]
    grid = 1
    for i in range(n_spatial):
        grid *= kernel.shape[i]
        flat_shape.append(image.shape[image.dim() - n_spatial + i])
    flat = image.reshape(flat_shape)
    out = torch.empty(flat.shape, dtype=torch.result_type(image, kernel), device=image.device)
    chunk = max(1, chunk_elements // grid)
    in_place = not (torch.is_grad_enabled() and (image.requires_grad or kernel.requires_grad))
    for start in range(0, flat.shape[0], chunk):
        stop = min(start + chunk, flat.shape[0])
        out[start:stop] = toeplitz_product(flat[start:stop], kernel, n_spatial, in_place)
    return out.reshape(image.shape)


def toeplitz_kernel(trajectory: torch.Tensor, image_shape: tuple[int, ...],
                    weights: torch.Tensor | None = None, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.complex64, backend: str = "auto", eps: float = 1e-6,
                    traj_key: str | None = None) -> torch.Tensor:
    """Complex kernel ``[*2N]`` such that ``toeplitz_apply(x, kernel) = A^H diag(weights) A x``.

    The PSF on the 2N grid is one adjoint NUFFT (finufft type 1 on CPU) of the weights; computed in
    complex128 then cast to ``dtype`` on ``device`` (default: the trajectory's device).
    """
    from mrdserve.models.physics.nufft import nufft_adjoint  # lazy: networks import toeplitz_apply without NUFFTs

    shape = tuple(int(n) for n in image_shape)
    if trajectory.dim() != 2 or trajectory.shape[0] != len(shape):
        raise ValueError(f"trajectory must be ({len(shape)}, K) for image_shape {shape}, "
                         f"got {tuple(trajectory.shape)}")
    n_samples = trajectory.shape[1]
    device = trajectory.device if device is None else torch.device(device)
    if weights is None:
        strengths = torch.ones(n_samples, dtype=torch.complex128, device=trajectory.device)
    else:
        if weights.is_complex() or weights.numel() != n_samples:
            raise ValueError(f"weights must be real with {n_samples} entries, got {weights.dtype} "
                             f"{tuple(weights.shape)}")
        strengths = weights.reshape(n_samples).to(trajectory.device, torch.float64).to(torch.complex128)
    grid = tuple(2 * n for n in shape)
    # nufft_adjoint onto the 2N grid gives prod(2N)^-1/2 * psf(j - N) at index j.
    psf = nufft_adjoint(strengths.reshape(1, n_samples), trajectory.to(torch.float64), grid,
                        backend=backend, eps=eps, traj_key=None if traj_key is None else traj_key + "+f64")
    psf = psf.reshape(grid) * math.sqrt(math.prod(grid))
    for axis in range(len(grid)):
        psf.select(axis, 0).zero_()  # index 0 is m = -N: unused by the linear convolution
    psf = torch.fft.ifftshift(psf)
    kernel = torch.fft.fftn(psf) / math.prod(shape)
    return kernel.to(device=device, dtype=dtype)
