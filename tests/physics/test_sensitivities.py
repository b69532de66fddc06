from __future__ import annotations

import pytest
import torch

from mrdserve.models.physics.fft import fft2c, fft3c
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.sensitivities import acs_window, sensitivities_from_acs, sensitivities_noncartesian
from mrdserve.models.physics.trajectories import radial_2d
from tests.physics.coil_phantom import coil_phantom, map_similarity

N = 64


def _acs(n: int, lines: int) -> torch.Tensor:
    mask = torch.zeros(n, 1, dtype=torch.bool)
    mask[n // 2 - lines // 2 : n // 2 - lines // 2 + lines] = True
    return mask


@pytest.mark.parametrize("taper", [0.0, 0.5, 1.0])
def test_acs_maps_match_true_maps_inside_object(taper: float) -> None:
    image, smaps, support = coil_phantom(N)
    kspace = fft2c(smaps * image[:, None])
    torch.manual_seed(0)
    kspace = kspace + 1e-3 * kspace.abs().max() * torch.randn_like(kspace)
    estimate = sensitivities_from_acs(kspace, _acs(N, 16), taper=taper)
    assert estimate.shape == smaps.shape and estimate.dtype == torch.complex64
    # Measured about 0.9998 for these smooth coils; the ACS method is looser than ESPIRiT in general.
    assert map_similarity(estimate, smaps, support) > 0.98
    rss = estimate.abs().square().sum(1).sqrt()
    assert torch.allclose(rss[support], torch.ones(()), atol=1e-4)


def test_acs_uses_only_acs_samples_and_accepts_batched_masks() -> None:
    image, smaps, _ = coil_phantom(N)
    kspace = fft2c(smaps * image[:, None])
    acs = _acs(N, 12)
    corrupted = kspace.clone()
    corrupted[..., ~acs[:, 0], :] = 1e3  # everything outside the ACS is garbage
    reference = sensitivities_from_acs(kspace, acs)
    assert torch.allclose(sensitivities_from_acs(corrupted, acs), reference, atol=1e-5)
    batched = sensitivities_from_acs(kspace.expand(2, -1, -1, -1), acs[None, None].expand(2, 1, N, 1))
    assert torch.allclose(batched[1], reference[0], atol=1e-5)


def test_acs_window_is_flat_inside_and_zero_outside() -> None:
    window = acs_window(_acs(32, 10), (32, 20), taper=0.4)
    assert window.shape == (32, 20)
    assert torch.all(window[:11] == 0) and torch.all(window[21:] == 0)
    assert torch.allclose(window[16], torch.ones(20))  # readout untouched, centre flat
    assert 0 < float(window[11, 0]) < 1  # tapered edge


def test_acs_maps_3d() -> None:
    image, smaps, support = coil_phantom(24, n_coils=4)
    depth = 8
    image3 = image[:, None].expand(1, depth, 24, 24).clone()
    smaps3 = smaps[:, :, None].expand(1, 4, depth, 24, 24).clone()
    kspace = fft3c(smaps3 * image3[:, None])
    acs = torch.zeros(depth, 24, 1, dtype=torch.bool)
    acs[depth // 2 - 2 : depth // 2 + 2, 6:18] = True
    estimate = sensitivities_from_acs(kspace, acs)
    assert estimate.shape == smaps3.shape
    assert map_similarity(estimate[:, :, depth // 2], smaps, support) > 0.98


def test_acs_bad_inputs() -> None:
    kspace = torch.zeros(1, 2, 16, 16, dtype=torch.complex64)
    with pytest.raises(TypeError, match="complex"):
        sensitivities_from_acs(kspace.real, _acs(16, 4))
    with pytest.raises(ValueError, match="broadcast"):
        sensitivities_from_acs(kspace, torch.ones(15, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="no k-space sample"):
        sensitivities_from_acs(kspace, torch.zeros(16, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="taper"):
        sensitivities_from_acs(kspace, _acs(16, 4), taper=2.0)


def test_noncartesian_maps_match_true_maps() -> None:
    image, smaps, support = coil_phantom(N)
    trajectory = radial_2d(32, 2 * N)  # undersampled radial (Nyquist would need about 100 spokes)
    density = trajectory.square().sum(0).sqrt()
    density = density + 0.25 * density[density > 0].min()  # ramp filter, non-zero at the centre
    op = NufftOp(trajectory, (N, N), density=density)
    data = op.forward_coils(smaps * image[:, None])
    estimate = sensitivities_noncartesian(data, op, kmax_fraction=0.15)
    assert estimate.shape == smaps.shape and estimate.dtype == torch.complex64
    # Measured about 0.998 with kmax_fraction 0.1 to 0.3.
    assert map_similarity(estimate, smaps, support) > 0.98
    with pytest.raises(ValueError, match="kmax_fraction"):
        sensitivities_noncartesian(data, op, kmax_fraction=0.0)
    with pytest.raises(ValueError, match="samples"):
        sensitivities_noncartesian(data[..., :-1], op)
