"""l1-wavelet compressed sensing (Lustig et al. 2007): min_x 0.5 ||A x - y||^2 + lambda ||W x||_1 by FISTA.

``A`` enters only through its normal operator and A^H y, so the same solver serves Cartesian SENSE and the
density-weighted Toeplitz normal operator of non-Cartesian data. ``W`` is an orthogonal Daubechies wavelet
(ptwt, zero boundary: an isometry) applied to the real and imaginary parts; the coarsest band is not penalised
and the image is circularly shifted by a seeded random offset each iteration (cycle spinning, as BART does)
against blocky artefacts.

lambda (data-scale free): the larger of ``relative_lambda`` times the 99th percentile of |A^H y| and
``NOISE_LAMBDA_FACTOR`` times the noise std of the data (the soft threshold of a wavelet denoiser scales with the
noise). Both defaults were tuned on simulated and ISMRMRD-generator data at 1-5% noise and 2-8 coils
(bench/quality.py); BART's ``pics -r`` is the same idea in BART's own data scaling.
"""

from __future__ import annotations

from collections.abc import Callable

import ptwt
import pywt
import torch

from mrdserve.models.physics.noise_level import quantile

DEFAULT_RELATIVE_LAMBDA = 0.002
NOISE_LAMBDA_FACTOR = 0.25
LIPSCHITZ_MARGIN = 1.05  # power iteration approaches the largest eigenvalue from below
DEFAULT_WAVELET = "db4"


def _levels(shape: tuple[int, ...], wavelet: pywt.Wavelet, max_level: int = 4) -> int:
    return max(1, min(max_level, pywt.dwt_max_level(min(shape), wavelet.dec_len)))


def _soft_threshold(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Soft threshold of complex values stored as a trailing real/imaginary pair of channels (dim 1)."""
    magnitude = x.square().sum(dim=1, keepdim=True).sqrt()
    return x * (1.0 - threshold / magnitude.clamp_min(1e-30)).clamp_min(0.0)


def wavelet_shrink(image: torch.Tensor, threshold: float, wavelet: str = DEFAULT_WAVELET) -> torch.Tensor:
    """W^T soft(W x, threshold) for complex images ``[B, y, x]`` (detail bands only)."""
    wave = pywt.Wavelet(wavelet)
    shape = tuple(image.shape[-2:])
    channels = torch.view_as_real(image).movedim(-1, 1)  # [B, 2, y, x]
    coefficients = ptwt.wavedec2(channels, wave, level=_levels(shape, wave), mode="zero")
    details = [type(band)(*(_soft_threshold(c, threshold) for c in band)) for band in coefficients[1:]]
    restored = ptwt.waverec2((coefficients[0], *details), wave)[..., : shape[0], : shape[1]]
    return torch.view_as_complex(restored.movedim(1, -1).contiguous())


def max_eigenvalue(normal: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor, n_iter: int = 15,
                   seed: int = 0) -> float:
    """Largest eigenvalue of a Hermitian positive operator by power iteration (the FISTA Lipschitz constant)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(like.shape, dtype=like.dtype, generator=generator).to(like.device)
    value = 1.0
    for _ in range(n_iter):
        y = normal(x)
        value = float(y.abs().square().sum().sqrt() / x.abs().square().sum().sqrt().clamp_min(1e-30))
        x = y / max(value, 1e-30)
    return value


def l1_wavelet(normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
               relative_lambda: float = DEFAULT_RELATIVE_LAMBDA, n_iter: int = 60, wavelet: str = DEFAULT_WAVELET,
               seed: int = 0, noise_std: float = 0.0) -> torch.Tensor:
    """FISTA for one complex image ``[1, y, x]`` (or a batch) given A^H A (``normal``) and A^H y (``rhs``);
    ``noise_std``: the data's noise standard deviation per sample (1 for prewhitened data)."""
    if relative_lambda < 0:
        raise ValueError(f"relative_lambda must be >= 0, got {relative_lambda}")
    scale = quantile(rhs.abs(), 0.99)
    if scale <= 0:
        return torch.zeros_like(rhs)
    step = 1.0 / (LIPSCHITZ_MARGIN * max_eigenvalue(normal, rhs, seed=seed))
    threshold = max(relative_lambda * scale, NOISE_LAMBDA_FACTOR * noise_std) * step
    generator = torch.Generator(device="cpu").manual_seed(seed)
    x = rhs * 0
    z, t = x, 1.0
    for _ in range(n_iter):
        gradient_step = z - step * (normal(z) - rhs)
        shifts = tuple(int(s) for s in torch.randint(0, 8, (2,), generator=generator))
        shifted = torch.roll(gradient_step, shifts, dims=(-2, -1))
        x_new = torch.roll(wavelet_shrink(shifted, threshold, wavelet), (-shifts[0], -shifts[1]), dims=(-2, -1))
        t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        z = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x
