"""Synthetic phantoms: deterministic, in range, rich in fine detail, with smooth phase."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrdserve.models.data.phantoms import (
    complex_phantom_2d,
    complex_phantom_3d,
    phantom_2d,
    phantom_3d,
    power_law_field,
    smooth_phase,
)


def _high_frequency_energy(image: np.ndarray, window: np.ndarray | None = None) -> float:
    """Spectral energy beyond half the Nyquist radius (|k| > 0.25 cycles/pixel)."""
    if window is not None:
        image = image * window
    power = np.abs(np.fft.fft2(image)) ** 2
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.fftfreq(image.shape[1])[None, :]
    return float(power[np.sqrt(fy**2 + fx**2) > 0.25].sum())


def test_phantom_2d_is_deterministic_by_seed_and_in_range() -> None:
    a, b, c = phantom_2d((64, 64), seed=3), phantom_2d((64, 64), seed=3), phantom_2d((64, 64), seed=4)
    assert a.shape == (64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert float(a.max()) > 0.8  # bright tissue present
    assert float(a[0, 0]) == 0.0 and float(a[-1, -1]) == 0.0  # air outside the head


def test_phantom_2d_non_square_shape() -> None:
    image = phantom_2d((48, 40), seed=0)
    assert image.shape == (48, 40)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phantom_2d_has_far_more_high_frequency_energy_than_ellipses(seed: int) -> None:
    """Criterion: energy above 0.25 cycles/pixel is >= 1.15x that of the same ellipses over the whole image
    (the skull edges dominate both) and >= 1.5x inside a window over the brain, where the ellipse-only
    phantom has only smooth anti-aliased edges (measured: 1.27-1.35x and 1.9-3.7x)."""
    n = 128
    full = phantom_2d((n, n), seed=seed).numpy().astype(np.float64)
    ellipses = phantom_2d((n, n), seed=seed, texture=False, detail=False).numpy().astype(np.float64)
    coords = -1.0 + 2.0 * np.arange(n) / n
    window = np.exp(-(((coords[:, None] / 0.5) ** 2 + (coords[None, :] / 0.4) ** 2) ** 4))
    assert _high_frequency_energy(full) >= 1.15 * _high_frequency_energy(ellipses)
    assert _high_frequency_energy(full, window) >= 1.5 * _high_frequency_energy(ellipses, window)


def test_power_law_field_is_normalised_and_band_limited() -> None:
    field = power_law_field((64, 64), seed=0, high_cutoff=0.25)
    assert abs(field.mean()) < 1e-9 and abs(field.std() - 1.0) < 1e-9
    power = np.abs(np.fft.fft2(field)) ** 2
    f = np.fft.fftfreq(64)
    k = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    assert power[k > 0.25 * 1.2].sum() < 1e-20 * power.sum() + 1e-12


@pytest.mark.parametrize("shape", [(32, 32), (64, 48), (16, 20, 24)])
def test_smooth_phase_has_bounded_gradient(shape: tuple[int, ...]) -> None:
    """Neighbour differences stay below max_order^2 * amplitude per half FOV, i.e. 8 pi / n per pixel."""
    for seed in range(5):
        phase = smooth_phase(shape, seed=seed).double().numpy()
        assert phase.dtype == np.float64 and phase.shape == shape
        for axis, n in enumerate(shape):
            step = np.abs(np.diff(phase, axis=axis)).max()
            assert step <= 4 * math.pi * 2.0 / n, (seed, axis, step)
    assert not np.allclose(smooth_phase(shape, seed=0).numpy(), smooth_phase(shape, seed=1).numpy())


def test_complex_phantom_2d_combines_magnitude_and_phase() -> None:
    image = complex_phantom_2d((32, 32), seed=2)
    assert image.dtype == torch.complex64 and image.shape == (32, 32)
    torch.testing.assert_close(image.abs(), phantom_2d((32, 32), seed=2), atol=1e-6, rtol=0)
    torch.testing.assert_close(image, complex_phantom_2d((32, 32), seed=2))


def test_phantom_3d_shape_range_and_structure() -> None:
    volume = phantom_3d((24, 32, 32), seed=1)
    assert volume.shape == (24, 32, 32) and volume.dtype == torch.float32
    assert float(volume.min()) >= 0.0 and float(volume.max()) <= 1.0
    assert torch.equal(volume, phantom_3d((24, 32, 32), seed=1))
    centre_slice, edge_slice = volume[12], volume[0]
    assert float(centre_slice.sum()) > 5 * float(edge_slice.sum())  # a head, not a cylinder
    complex_volume = complex_phantom_3d((16, 16, 16), seed=0)
    assert complex_volume.dtype == torch.complex64 and complex_volume.shape == (16, 16, 16)


def test_bad_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        phantom_2d((64, 64, 64))
    with pytest.raises(ValueError, match="shape"):
        phantom_3d((4, 64, 64))
