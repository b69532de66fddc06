"""Image quality metrics with fastMRI's conventions (NMSE, PSNR, SSIM), on magnitude images.

Inputs are real 2D images ``[y, x]`` or volumes ``[slices, y, x]``, numpy or torch; outputs are floats.
As fastMRI's ``evaluate.py``: PSNR and SSIM use ``data_range = gt.max()`` unless ``maxval`` is given, and
SSIM is the mean over slices of skimage's ``structural_similarity`` defaults (7x7 uniform window, K1 = 0.01,
K2 = 0.03, sample covariance, borders of 3 pixels cropped). Computed here in float64 with scipy.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import uniform_filter

__all__ = ["fitted_scores", "nmse", "psnr", "scale_fit", "ssim"]

ArrayLike = np.ndarray | torch.Tensor


def _as_float64(name: str, x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if torch.is_complex(x):
            raise TypeError(f"{name} must be real (take the magnitude first), got {x.dtype}")
        x = x.detach().cpu().to(torch.float64).numpy()
    x = np.asarray(x)
    if np.iscomplexobj(x):
        raise TypeError(f"{name} must be real (take the magnitude first), got {x.dtype}")
    return x.astype(np.float64)


def _pair(gt: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    gt_array, pred_array = _as_float64("gt", gt), _as_float64("pred", pred)
    if gt_array.shape != pred_array.shape:
        raise ValueError(f"gt and pred shapes differ: {gt_array.shape} vs {pred_array.shape}")
    if gt_array.ndim not in (2, 3):
        raise ValueError(f"expected a 2D image or a [slices, y, x] volume, got shape {gt_array.shape}")
    return gt_array, pred_array


def _data_range(gt: np.ndarray, maxval: float | None) -> float:
    data_range = float(gt.max()) if maxval is None else float(maxval)
    if not data_range > 0:
        raise ValueError(f"data range (maxval or gt.max()) must be positive, got {data_range}")
    return data_range


def nmse(gt: ArrayLike, pred: ArrayLike) -> float:
    """Normalised mean squared error ``||gt - pred||^2 / ||gt||^2``."""
    gt_array, pred_array = _pair(gt, pred)
    energy = float(np.sum(gt_array**2))
    if energy == 0:
        raise ValueError("gt is all zeros: NMSE is undefined")
    return float(np.sum((gt_array - pred_array) ** 2)) / energy


def psnr(gt: ArrayLike, pred: ArrayLike, maxval: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(maxval^2 / mean((gt - pred)^2))``, maxval = gt.max()."""
    gt_array, pred_array = _pair(gt, pred)
    data_range = _data_range(gt_array, maxval)
    mse = float(np.mean((gt_array - pred_array) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def _ssim_2d(x: np.ndarray, y: np.ndarray, data_range: float, win_size: int, k1: float, k2: float) -> float:
    """Mean SSIM of one slice, as skimage computes it (uniform window, sample covariance, cropped borders)."""
    if min(x.shape) < win_size:
        raise ValueError(f"images must be at least {win_size}x{win_size} for SSIM, got {x.shape}")
    n_points = win_size**x.ndim
    cov_norm = n_points / (n_points - 1.0)
    mean_x = uniform_filter(x, size=win_size)
    mean_y = uniform_filter(y, size=win_size)
    var_x = cov_norm * (uniform_filter(x * x, size=win_size) - mean_x * mean_x)
    var_y = cov_norm * (uniform_filter(y * y, size=win_size) - mean_y * mean_y)
    cov_xy = cov_norm * (uniform_filter(x * y, size=win_size) - mean_x * mean_y)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    numerator = (2.0 * mean_x * mean_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    pad = (win_size - 1) // 2
    return float((numerator / denominator)[pad:-pad, pad:-pad].mean())


def ssim(gt: ArrayLike, pred: ArrayLike, maxval: float | None = None, win_size: int = 7,
         k1: float = 0.01, k2: float = 0.03) -> float:
    """Structural similarity averaged over slices, data range ``gt.max()`` of the whole volume by default."""
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size}")
    gt_array, pred_array = _pair(gt, pred)
    data_range = _data_range(gt_array, maxval)
    if gt_array.ndim == 2:
        gt_array, pred_array = gt_array[None], pred_array[None]
    values = [_ssim_2d(g, p, data_range, win_size, k1, k2) for g, p in zip(gt_array, pred_array, strict=True)]
    return float(np.mean(values))


def scale_fit(gt: ArrayLike, pred: ArrayLike) -> np.ndarray:
    """``pred`` times the least-squares scalar that brings it closest to ``gt`` (reconstructions whose intensity
    scale is not calibrated, e.g. after prewhitening, compare on structure, not on units)."""
    gt_array, pred_array = _pair(gt, pred)
    denominator = float((pred_array * pred_array).sum())
    return pred_array * (float((gt_array * pred_array).sum()) / denominator if denominator > 0 else 1.0)


def fitted_scores(gt: ArrayLike, pred: ArrayLike) -> tuple[float, float, float]:
    """(PSNR, SSIM, NMSE) of the scale-fitted ``pred`` against ``gt``."""
    fitted = scale_fit(gt, pred)
    return psnr(gt, fitted), ssim(gt, fitted), nmse(gt, fitted)
