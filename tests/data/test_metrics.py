"""fastMRI-convention metrics: NMSE, PSNR and SSIM (checked against scikit-image)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from mrdserve.models.data.metrics import nmse, psnr, ssim
from mrdserve.models.data.phantoms import phantom_2d


def _volume_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    gt = np.stack([phantom_2d((48, 40), seed=s).double().numpy() for s in range(3)])
    rng = np.random.default_rng(seed)
    pred = np.abs(gt + 0.05 * rng.standard_normal(gt.shape))
    return gt, pred


def test_nmse_and_psnr_known_values() -> None:
    gt = np.full((2, 8, 8), 2.0)
    pred = gt + 0.5
    assert nmse(gt, pred) == pytest.approx(0.0625)  # 0.25 / 4
    assert psnr(gt, pred) == pytest.approx(10 * math.log10(4.0 / 0.25))  # data range gt.max() = 2
    assert psnr(gt, pred, maxval=1.0) == pytest.approx(10 * math.log10(1.0 / 0.25))
    assert psnr(gt, gt) == math.inf
    assert nmse(gt, gt) == 0.0


def test_torch_and_numpy_inputs_agree() -> None:
    gt, pred = _volume_pair()
    for metric in (nmse, psnr, ssim):
        from_torch = metric(torch.from_numpy(gt), torch.from_numpy(pred))
        assert from_torch == pytest.approx(metric(gt, pred), rel=1e-12)


def test_ssim_matches_skimage_as_fastmri_calls_it() -> None:
    """fastMRI evaluate.py: mean over slices of structural_similarity(gt[i], pred[i], data_range=gt.max())."""
    gt, pred = _volume_pair(seed=1)
    expected = np.mean([structural_similarity(g, p, data_range=gt.max())
                        for g, p in zip(gt, pred, strict=True)])
    assert abs(ssim(gt, pred) - expected) < 1e-6
    assert abs(ssim(gt, pred, maxval=2.0) - np.mean(
        [structural_similarity(g, p, data_range=2.0) for g, p in zip(gt, pred, strict=True)])) < 1e-6
    assert abs(ssim(gt[1], pred[1]) - structural_similarity(gt[1], pred[1], data_range=gt[1].max())) < 1e-6


def test_ssim_of_identical_images_is_one_and_decreases_with_noise() -> None:
    gt, pred = _volume_pair()
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)
    noisier = np.abs(gt + 0.2 * np.random.default_rng(5).standard_normal(gt.shape))
    assert ssim(gt, noisier) < ssim(gt, pred) < 1.0


def test_errors() -> None:
    gt = np.ones((8, 8))
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(gt, np.ones((8, 9)))
    with pytest.raises(ValueError, match="shapes differ"):
        nmse(gt, np.ones((2, 8, 8)))
    with pytest.raises(TypeError, match="real"):
        psnr(gt, gt.astype(np.complex64))
    with pytest.raises(ValueError, match="2D image"):
        nmse(np.ones(8), np.ones(8))
    with pytest.raises(ValueError, match="all zeros"):
        nmse(np.zeros((8, 8)), gt)
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(np.ones((5, 5)), np.ones((5, 5)))
