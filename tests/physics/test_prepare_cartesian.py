from __future__ import annotations

import pytest
import torch

from mrdserve.models.data.coils import coil_sensitivities_2d
from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.physics.fft import fft2c
from mrdserve.models.physics.masks import EquispacedFractionMask
from mrdserve.models.physics.prepare_cartesian import acs_from_mask, prepare_cartesian
from mrdserve.models.physics.sense import sense_adjoint

SHAPE = (48, 40)


def _multicoil(n_coils: int = 4, seed: int = 0, gain: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    image = complex_phantom_2d(SHAPE, seed=seed) * gain
    maps = coil_sensitivities_2d(n_coils, SHAPE, seed=seed)
    return fft2c(maps * image), image


def _mask() -> torch.Tensor:
    return EquispacedFractionMask([0.2], [4])(SHAPE[0], seed=0).kspace_mask()  # [ky, 1]


def test_acs_smaps_have_unit_rss_on_the_object_and_outputs_have_network_layout():
    kspace, image = _multicoil()
    prepared = prepare_cartesian(kspace, _mask())
    assert prepared.kspace.shape == (1, 4, *SHAPE) and prepared.kspace.dtype == torch.complex64
    assert prepared.mask.shape == (1, 1, *SHAPE) and prepared.mask.dtype == torch.bool
    rss = prepared.smaps.abs().square().sum(dim=1).sqrt()[0]
    signal = image.abs() > 0.2 * image.abs().max()
    assert torch.allclose(rss[signal], torch.ones(()), atol=1e-3)
    kspace_r, mask_r, smaps_r = prepared.to_network_inputs()
    assert kspace_r.shape == (1, 4, *SHAPE, 2) and smaps_r.shape == (1, 4, *SHAPE, 2)
    assert mask_r.shape == (1, 1, *SHAPE) and mask_r.dtype == torch.float32
    assert not kspace_r.is_complex() and not smaps_r.is_complex()
    # samples outside the mask are zeroed
    assert float(prepared.kspace.abs()[..., ~_mask()[:, 0], :].max()) == 0.0


def test_scale_makes_the_adjoint_order_one_and_is_restored():
    kspace, _ = _multicoil(gain=1234.0)
    prepared = prepare_cartesian(kspace, _mask())
    adjoint = sense_adjoint(prepared.kspace, prepared.smaps, prepared.mask)
    assert torch.quantile(adjoint.abs().flatten(), 0.99) == pytest.approx(1.0, rel=1e-4)
    assert prepared.scale.shape == (1,) and float(prepared.scale) > 100
    restored = prepared.restore_scale(adjoint.abs())
    expected = sense_adjoint(kspace.unsqueeze(0) * prepared.mask, prepared.smaps, prepared.mask).abs()
    assert torch.allclose(restored, expected, rtol=1e-4, atol=1e-3)
    # a given scale is used as is, so training and serving can share one
    again = prepare_cartesian(kspace, _mask(), scale=2.0)
    assert torch.allclose(again.kspace * 2.0, kspace.unsqueeze(0) * again.mask, atol=1e-4)


def test_batch_espirit_and_given_maps():
    first, _ = _multicoil(seed=0)
    second, _ = _multicoil(seed=1, gain=3.0)
    batch = torch.stack([first, second])
    prepared = prepare_cartesian(batch, _mask(), sensitivities="espirit")
    assert prepared.smaps.shape == (2, 4, *SHAPE) and prepared.scale.shape == (2,)
    assert float(prepared.scale[1] / prepared.scale[0]) == pytest.approx(3.0, rel=0.1)
    maps = coil_sensitivities_2d(4, SHAPE, seed=0)
    given = prepare_cartesian(batch, _mask(), sensitivities=maps)
    assert torch.equal(given.smaps[1], maps)
    ones = prepare_cartesian(batch, _mask(), sensitivities="ones")
    assert torch.equal(ones.smaps, torch.ones_like(ones.smaps))


def test_single_coil_gets_maps_of_ones_and_two_network_inputs():
    image = complex_phantom_2d(SHAPE, seed=2)
    prepared = prepare_cartesian(fft2c(image).unsqueeze(0), _mask())
    assert torch.equal(prepared.smaps, torch.ones_like(prepared.smaps))
    kspace_r, mask_r = prepared.to_network_inputs(with_smaps=False)
    assert kspace_r.shape == (1, 1, *SHAPE, 2) and mask_r.shape == (1, 1, *SHAPE)


def test_acs_from_mask_finds_the_central_run():
    mask = torch.zeros(1, 1, 16, 8, dtype=torch.bool)
    mask[..., 6:11, :] = True
    mask[..., 2, :] = True
    acs = acs_from_mask(mask)
    assert acs.shape == (1, 1, 16, 1)
    assert acs[0, 0, :, 0].nonzero().flatten().tolist() == [6, 7, 8, 9, 10]


def test_errors_name_the_field():
    kspace, _ = _multicoil()
    with pytest.raises(TypeError, match="kspace"):
        prepare_cartesian(kspace.real, _mask())
    with pytest.raises(ValueError, match="kspace"):
        prepare_cartesian(kspace[0, 0], _mask())
    with pytest.raises(ValueError, match="mask"):
        prepare_cartesian(kspace, torch.ones(SHAPE[0] + 1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        prepare_cartesian(kspace, torch.zeros(SHAPE[0], 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        prepare_cartesian(kspace, torch.full((SHAPE[0], 1), 0.5))
    off_centre = torch.zeros(SHAPE[0], 1, dtype=torch.bool)
    off_centre[::4] = True
    off_centre[SHAPE[0] // 2] = False
    with pytest.raises(ValueError, match="centre"):
        prepare_cartesian(kspace, off_centre)
    with pytest.raises(ValueError, match="sensitivities"):
        prepare_cartesian(kspace, _mask(), sensitivities="magic")
    with pytest.raises(ValueError, match="sensitivities"):
        prepare_cartesian(kspace, _mask(), sensitivities=torch.ones(3, *SHAPE, dtype=torch.complex64))
    with pytest.raises(ValueError, match="scale"):
        prepare_cartesian(kspace, _mask(), scale=0.0)
