"""Synthetic coil sensitivities and receiver noise."""

from __future__ import annotations

import pytest
import torch

from mrdserve.models.data.coils import (
    add_noise,
    coil_sensitivities_2d,
    coil_sensitivities_3d,
    noise_samples,
    random_coil_covariance,
    sigma_for_snr,
)
from mrdserve.models.data.phantoms import phantom_2d
from mrdserve.models.physics.fft import fft2c, ifft2c
from mrdserve.models.physics.prewhiten import noise_covariance, prewhiten, prewhitening_matrix


def _rss(maps: torch.Tensor) -> torch.Tensor:
    return maps.abs().pow(2).sum(0).sqrt()


def test_maps_2d_rss_is_one_inside_the_object() -> None:
    maps = coil_sensitivities_2d(8, (64, 64), seed=0)
    assert maps.shape == (8, 64, 64) and maps.dtype == torch.complex64
    inside = phantom_2d((64, 64), seed=0) > 0.05
    torch.testing.assert_close(_rss(maps)[inside], torch.ones(int(inside.sum())), atol=1e-5, rtol=0)


def test_maps_are_smooth_distinct_and_deterministic() -> None:
    maps = coil_sensitivities_2d(8, (64, 64), seed=1)
    torch.testing.assert_close(maps, coil_sensitivities_2d(8, (64, 64), seed=1))
    # Smooth: neighbouring pixels differ by little (a map spans about [0, 1]).
    step = max(float((maps[:, 1:] - maps[:, :-1]).abs().max()),
               float((maps[:, :, 1:] - maps[:, :, :-1]).abs().max()))
    assert step < 0.15
    # Distinct: every pair of coils has clearly different magnitude profiles.
    magnitudes = maps.abs().reshape(8, -1)
    for i in range(8):
        for j in range(i + 1, 8):
            assert float((magnitudes[i] - magnitudes[j]).abs().max()) > 0.3
    # Each coil is brightest on its own side: maxima are spread out, not all at one place.
    peaks = {int(m.argmax()) for m in magnitudes}
    assert len(peaks) == 8


def test_rss_of_coil_images_equals_object_magnitude() -> None:
    image = phantom_2d((32, 32), seed=0).to(torch.complex64)
    maps = coil_sensitivities_2d(4, (32, 32), seed=2)
    coil_images = ifft2c(fft2c(maps * image))
    torch.testing.assert_close(_rss(coil_images), image.abs(), atol=1e-5, rtol=0)


def test_single_coil_is_ones() -> None:
    torch.testing.assert_close(coil_sensitivities_2d(1, (8, 8)), torch.ones(1, 8, 8, dtype=torch.complex64))
    ones = torch.ones(1, 4, 8, 8, dtype=torch.complex64)
    torch.testing.assert_close(coil_sensitivities_3d(1, (4, 8, 8)), ones)


def test_maps_3d_rings_vary_along_z() -> None:
    maps = coil_sensitivities_3d(8, (16, 24, 24), seed=0)
    assert maps.shape == (8, 16, 24, 24)
    torch.testing.assert_close(_rss(maps), torch.ones(16, 24, 24), atol=1e-5, rtol=0)
    # Two rings: the first coil is stronger at one end of z than at the other.
    profile = maps[0].abs().mean(dim=(1, 2))
    assert float(profile.max() / profile.min()) > 1.5


def test_bad_coil_arguments() -> None:
    with pytest.raises(ValueError, match="n_coils"):
        coil_sensitivities_2d(0, (8, 8))
    with pytest.raises(ValueError, match="shape"):
        coil_sensitivities_2d(2, (8, 8, 8))
    with pytest.raises(ValueError, match="n_rings"):
        coil_sensitivities_3d(4, (8, 8, 8), n_rings=5)


def test_correlated_noise_has_requested_covariance() -> None:
    psi = random_coil_covariance(6, correlation=0.4, seed=0)
    assert torch.allclose(psi, psi.conj().T)
    offdiag = psi - torch.diag(torch.diagonal(psi))
    assert float(offdiag.abs().max()) > 0.05  # genuinely correlated
    sigma = 0.5
    scan = noise_samples(6, 100_000, sigma=sigma, covariance=psi, seed=1)
    assert scan.shape == (6, 100_000) and scan.dtype == torch.complex64
    empirical = noise_covariance(scan.to(torch.complex128))
    torch.testing.assert_close(empirical, sigma**2 * psi.to(torch.complex128), atol=0.01, rtol=0)
    # Noise added to k-space with the same settings has the same covariance across coils.
    kspace = torch.zeros(1, 6, 200, 200, dtype=torch.complex64)
    noisy = add_noise(kspace, sigma=sigma, covariance=psi, seed=2)
    empirical_k = noise_covariance(noisy[0].reshape(6, -1).to(torch.complex128))
    torch.testing.assert_close(empirical_k, sigma**2 * psi.to(torch.complex128), atol=0.01, rtol=0)
    # Prewhitening with the scan's covariance makes the k-space noise white with unit variance.
    whitened = prewhiten(noisy, prewhitening_matrix(empirical.to(torch.complex64)))
    white = noise_covariance(whitened[0].reshape(6, -1).to(torch.complex128))
    torch.testing.assert_close(white, torch.eye(6, dtype=torch.complex128), atol=0.03, rtol=0)


def test_add_noise_snr_mask_and_determinism() -> None:
    kspace = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.complex64)
    mask = torch.zeros(32, 1, dtype=torch.bool)
    mask[::2] = True
    kspace = kspace * mask
    noisy = add_noise(kspace, snr=10.0, seed=5, mask=mask)
    torch.testing.assert_close(noisy, add_noise(kspace, snr=10.0, seed=5, mask=mask))
    assert torch.all(noisy[..., 1::2, :] == 0)  # unsampled lines stay zero
    noise = (noisy - kspace)[..., ::2, :]
    signal_rms = kspace[..., ::2, :].abs().pow(2).mean().sqrt()
    assert abs(float(signal_rms / noise.abs().pow(2).mean().sqrt()) - 10.0) < 0.5
    assert abs(sigma_for_snr(kspace, 10.0) - float(signal_rms) / 10.0) < 1e-6
    # coil_dim selects the coil axis for non-batched data [C, K].
    psi = random_coil_covariance(4, seed=3)
    flat = add_noise(torch.zeros(4, 50_000, dtype=torch.complex64), covariance=psi, seed=0, coil_dim=0)
    torch.testing.assert_close(noise_covariance(flat.to(torch.complex128)), psi.to(torch.complex128),
                               atol=0.03, rtol=0)


def test_add_noise_rejects_bad_arguments() -> None:
    kspace = torch.zeros(1, 2, 4, 4, dtype=torch.complex64)
    with pytest.raises(ValueError, match="snr or sigma"):
        add_noise(kspace, snr=1.0, sigma=1.0)
    with pytest.raises(TypeError, match="complex"):
        add_noise(kspace.real, sigma=1.0)
    with pytest.raises(ValueError, match="covariance"):
        add_noise(kspace, covariance=torch.eye(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="non-zero"):
        add_noise(kspace, snr=3.0)
