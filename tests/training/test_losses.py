"""Losses: SSIM against scikit-image, MS-SSIM properties and scales, gradients, compound loss values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from mrdserve.models.training.losses import (
    LOSSES,
    MS_SSIM_WEIGHTS,
    compound_loss,
    get_loss,
    l1,
    ms_ssim,
    mse,
    ssim,
    ssim_loss,
)


def _images(shape: tuple[int, ...], noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    clean = torch.nn.functional.avg_pool2d(torch.rand(1, 1, *[2 * n for n in shape[-2:]], generator=generator), 2)
    clean = clean.reshape(shape[-2:]).expand(shape).contiguous()
    return clean, (clean + noise * torch.randn(shape, generator=generator)).clamp(min=0)


def test_ssim_matches_scikit_image() -> None:
    target, pred = _images((2, 48, 40), 0.1)
    ours = ssim(pred, target, reduction="none")
    for i in range(2):
        reference = structural_similarity(target[i].double().numpy(), pred[i].double().numpy(),
                                          gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                          data_range=float(target[i].max()))
        assert math.isclose(float(ours[i]), reference, abs_tol=1e-5)


def test_ms_ssim_single_scale_is_ssim() -> None:
    target, pred = _images((3, 64, 64), 0.05)
    assert torch.allclose(ms_ssim(pred, target, weights=(1.0,)), ssim(pred, target), atol=1e-6)


def test_ms_ssim_by_hand_on_two_scales() -> None:
    """32x32 keeps two scales: cs(full)^w1 * ssim(half)^w2 with the first two weights renormalised."""
    target, pred = _images((1, 32, 32), 0.1, seed=3)
    w1, w2 = MS_SSIM_WEIGHTS[0] / sum(MS_SSIM_WEIGHTS[:2]), MS_SSIM_WEIGHTS[1] / sum(MS_SSIM_WEIGHTS[:2])
    value_range = float(target.max())
    _, cs = _skimage_cs(target[0].numpy(), pred[0].numpy(), value_range)
    half = torch.nn.functional.avg_pool2d(torch.stack([target, pred]), 2)
    coarse = structural_similarity(half[0, 0].double().numpy(), half[1, 0].double().numpy(), gaussian_weights=True,
                                   sigma=1.5, use_sample_covariance=False, data_range=value_range)
    assert math.isclose(float(ms_ssim(pred, target)), cs**w1 * coarse**w2, rel_tol=1e-4)


def _skimage_cs(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term with scikit-image's Gaussian filter (valid region)."""
    from scipy.ndimage import gaussian_filter

    x, y = x.astype(np.float64), y.astype(np.float64)

    def blur(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, sigma=1.5, truncate=3.5)[5:-5, 5:-5]

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return float((lum * cs).mean()), float(cs.mean())


def test_ms_ssim_identity_and_monotone_in_noise() -> None:
    target, _ = _images((2, 64, 64), 0.0)
    assert math.isclose(float(ms_ssim(target, target)), 1.0, abs_tol=1e-6)
    values = [float(ms_ssim(_images((2, 64, 64), noise)[1], target)) for noise in (0.02, 0.05, 0.1, 0.3)]
    assert all(a > b for a, b in itertools.pairwise(values)) and values[-1] < 0.9


@pytest.mark.parametrize("size", [16, 32, 64, 200])
def test_ms_ssim_works_at_small_and_large_sizes(size: int) -> None:
    target, pred = _images((1, size, size), 0.1, seed=size)
    value = float(ms_ssim(pred, target))
    assert 0.0 < value < 1.0


def test_gradients_flow_and_are_finite() -> None:
    target, pred = _images((2, 32, 32), 0.1)
    for name, loss in LOSSES.items():
        leaf = pred.clone().requires_grad_()
        loss(leaf, target).backward()
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0, name
    # a badly wrong prediction (negative contrast-structure terms) still gives finite gradients
    leaf = (1 - target).clone().requires_grad_()
    compound_loss(leaf, target).backward()
    assert torch.isfinite(leaf.grad).all()


def test_compound_loss_value() -> None:
    target, pred = _images((2, 32, 32), 0.1, seed=5)
    expected = 0.98 * (1 - float(ms_ssim(pred, target))) + 0.02 * float((pred - target).abs().mean())
    assert math.isclose(float(compound_loss(pred, target)), expected, rel_tol=1e-6)
    assert float(compound_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    constant = torch.full((1, 16, 16), 0.5)
    assert float(l1(constant, torch.zeros(1, 16, 16))) == pytest.approx(0.5)
    assert float(mse(constant, torch.zeros(1, 16, 16))) == pytest.approx(0.25)
    assert float(ssim_loss(target, target)) == pytest.approx(0.0, abs=1e-6)


def test_data_range_and_3d_slices() -> None:
    target, pred = _images((2, 3, 32, 32), 0.1)  # [B, z, y, x]: scored slice by slice
    per_slice = ms_ssim(pred, target, data_range=torch.tensor([1.0, 2.0]), reduction="none")
    assert per_slice.shape == (2, 3)
    assert torch.allclose(per_slice[1, 0], ms_ssim(pred[1, 0], target[1, 0], data_range=2.0))
    with pytest.raises(ValueError, match="data_range"):
        ms_ssim(pred, target, data_range=torch.ones(4))
    with pytest.raises(ValueError, match="same shape"):
        ms_ssim(pred, target[..., :16])


def test_registry() -> None:
    assert set(LOSSES) == {"compound", "ms-ssim", "ssim", "l1", "mse"}
    assert get_loss("compound") is compound_loss
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        get_loss("huber")
