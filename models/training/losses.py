"""Training losses on magnitude images: SSIM, multi-scale SSIM, L1, MSE and the thesis compound loss.

Images are ``[..., H, W]``; every leading dimension is a batch dimension (a 3D output ``[B, z, y, x]`` is
scored slice by slice). SSIM uses a Gaussian window (11 taps, sigma 1.5), population (co)variances and
"valid" filtering, so single-scale SSIM equals scikit-image's ``structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False)``. MS-SSIM (Wang, Simoncelli and Bovik 2003) uses 5 scales with the
standard weights; an image too small for them keeps the largest number of scales whose coarsest image is
still at least one window wide (32x32: 2 scales, 64x64: 3, 160x160 and up: all 5), with the kept weights
renormalised to sum to 1, and a window narrower than the image itself is shrunk to the image's size.
``data_range`` defaults to each target image's maximum (the normalised targets have a maximum near 1).
Computations run in float32 even under autocast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn import functional

__all__ = ["LOSSES", "MS_SSIM_WEIGHTS", "compound_loss", "get_loss", "l1", "ms_ssim", "ms_ssim_loss", "mse",
           "ssim", "ssim_loss"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03
CS_FLOOR = 1e-6  # contrast-structure terms are clamped here before the fractional powers (no NaN, finite grads)


def _as_images(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Float32 ``[N, 1, H, W]`` views of ``pred`` and ``target`` ``[..., H, W]`` and their leading shape."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("pred and target must be tensors")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if pred.dim() < 2 or pred.is_complex() or target.is_complex():
        raise ValueError(f"pred and target must be real images [..., H, W], got {pred.dtype} {tuple(pred.shape)}")
    leading = tuple(pred.shape[:-2])
    height, width = pred.shape[-2:]
    return (pred.float().reshape(-1, 1, height, width), target.float().reshape(-1, 1, height, width), leading)


def _data_range(data_range: float | torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
    """Per-image data range ``[N, 1, 1, 1]``: the given value(s), or each target image's maximum."""
    n = target.shape[0]
    if data_range is None:
        value = target.detach().amax(dim=(1, 2, 3))
    else:
        value = torch.as_tensor(data_range, dtype=torch.float32, device=target.device).reshape(-1)
        if value.numel() == 0 or n % value.numel() != 0:
            raise ValueError(f"data_range has {value.numel()} values for {n} images")
        value = value.repeat_interleave(n // value.numel())  # one per image, or per leading batch entry
    if not bool((value > 0).all()):
        raise ValueError("data_range must be positive (is the target all zeros?)")
    return value.reshape(n, 1, 1, 1)


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """Normalised 1D Gaussian ``(size,)`` float32."""
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()


def _blur(image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of ``[N, 1, H, W]``."""
    size = window.numel()
    image = functional.conv2d(image, window.reshape(1, 1, size, 1))
    return functional.conv2d(image, window.reshape(1, 1, 1, size))


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, data_range: torch.Tensor, window: torch.Tensor,
                k1: float, k2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image ``[N]``."""
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x * mu_x
    var_y = _blur(y * y, window) - mu_y * mu_y
    cov = _blur(x * y, window) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return (luminance * cs_map).mean(dim=(1, 2, 3)), cs_map.mean(dim=(1, 2, 3))


def _window_size(height: int, width: int, win_size: int) -> int:
    size = min(win_size, height, width)
    return size if size % 2 == 1 else size - 1


def _n_scales(height: int, width: int, win_size: int, max_scales: int) -> int:
    """Largest number of scales (<= ``max_scales``) whose coarsest image is at least ``win_size`` wide."""
    scales = 1
    while scales < max_scales and min(height, width) // 2**scales >= win_size:
        scales += 1
    return scales


def _reduce(values: torch.Tensor, leading: tuple[int, ...], reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values.reshape(leading)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float | torch.Tensor | None = None,
         win_size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA, k1: float = K1, k2: float = K2,
         reduction: str = "mean") -> torch.Tensor:
    """Single-scale SSIM of ``[..., H, W]`` images (mean over images, or per image with reduction='none')."""
    x, y, leading = _as_images(pred, target)
    size = _window_size(x.shape[-2], x.shape[-1], win_size)
    window = _gaussian_window(size, sigma, x.device)
    value, _ = _ssim_terms(x, y, _data_range(data_range, y), window, k1, k2)
    return _reduce(value, leading, reduction)


def ms_ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float | torch.Tensor | None = None,
            weights: Sequence[float] = MS_SSIM_WEIGHTS, win_size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA,
            k1: float = K1, k2: float = K2, reduction: str = "mean") -> torch.Tensor:
    """Multi-scale SSIM of ``[..., H, W]`` images: prod_j cs_j^w_j (scales 1..M-1) times ssim_M^w_M.

    Images are halved by 2x2 average pooling between scales; see the module docstring for small images.
    """
    x, y, leading = _as_images(pred, target)
    height, width = x.shape[-2:]
    size = _window_size(height, width, win_size)
    n_scales = _n_scales(height, width, size, len(weights))
    kept = torch.tensor(list(weights)[:n_scales], dtype=torch.float32, device=x.device)
    kept = kept / kept.sum()
    window = _gaussian_window(size, sigma, x.device)
    value_range = _data_range(data_range, y)
    result = torch.ones(x.shape[0], dtype=torch.float32, device=x.device)
    for scale in range(n_scales):
        full, cs = _ssim_terms(x, y, value_range, window, k1, k2)
        term = full if scale == n_scales - 1 else cs
        result = result * term.clamp(min=CS_FLOOR) ** kept[scale]
        if scale < n_scales - 1:
            x, y = functional.avg_pool2d(x, 2), functional.avg_pool2d(y, 2)
    return _reduce(result, leading, reduction)


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error."""
    return functional.l1_loss(pred.float(), target.float())


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error."""
    return functional.mse_loss(pred.float(), target.float())


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, data_range: float | torch.Tensor | None = None,
              ) -> torch.Tensor:
    """1 - SSIM."""
    return 1 - ssim(pred, target, data_range)


def ms_ssim_loss(pred: torch.Tensor, target: torch.Tensor, data_range: float | torch.Tensor | None = None,
                 ) -> torch.Tensor:
    """1 - MS-SSIM."""
    return 1 - ms_ssim(pred, target, data_range)


def compound_loss(pred: torch.Tensor, target: torch.Tensor, data_range: float | torch.Tensor | None = None,
                  alpha: float = 0.98) -> torch.Tensor:
    """The thesis recipe: ``alpha (1 - MS-SSIM) + (1 - alpha) L1`` with alpha = 0.98."""
    return alpha * (1 - ms_ssim(pred, target, data_range)) + (1 - alpha) * l1(pred, target)


LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: dict[str, LossFunction] = {
    "compound": compound_loss,
    "ms-ssim": ms_ssim_loss,
    "ssim": ssim_loss,
    "l1": l1,
    "mse": mse,
}


def get_loss(name: str) -> LossFunction:
    """The loss registered as ``name`` (``loss(pred, target) -> scalar tensor``)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]
