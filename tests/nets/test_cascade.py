from __future__ import annotations

import pytest
import torch
from torch import nn

from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.nets.cascade import CascadeNet
from mrdserve.models.nets.data_consistency import WeightedConsistency, data_consistency
from mrdserve.models.nets.registry import build_network
from mrdserve.models.physics.fft import fft2c, ifft2c
from mrdserve.models.physics.masks import EquispacedFractionMask
from mrdserve.models.physics.prepare_cartesian import prepare_cartesian
from mrdserve.models.physics.sense import sense_adjoint
from tests.nets.cartesian_inputs import fit_losses, prepared_example, random_inputs
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters

TINY = {"n_cascades": 2, "n_layers": 2, "n_filters": 8}


def _fully_sampled(batch: int, n_coils: int, shape: tuple[int, int], seed: int) -> tuple[torch.Tensor, ...]:
    kspace, _, smaps = random_inputs(batch, n_coils, shape, seed=seed, normalise_maps=True)
    g = torch.Generator().manual_seed(seed + 100)
    kspace = torch.randn(kspace.shape, generator=g)
    return kspace, torch.ones(batch, 1, *shape), smaps


def _single_coil_example() -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    image = complex_phantom_2d((32, 32), seed=0)
    mask = EquispacedFractionMask([0.125], [4])(32, seed=0).kspace_mask()
    prepared = prepare_cartesian(fft2c(image).unsqueeze(0), mask)
    return prepared.to_network_inputs(with_smaps=False), image.abs().unsqueeze(0) / prepared.scale.reshape(-1, 1, 1)


@pytest.mark.parametrize(("kwargs", "expected"), [
    # per cascade: conv 2->48 (912) + 4 x conv 48->48 (20,784) + conv 48->2 (866) = 84,914; x 5 cascades
    ({}, 424_570),
    ({"dc_lambda": 10.0}, 424_570),  # fixed lambda: a buffer, no parameter
    ({"dc_lambda": 10.0, "learn_lambda": True}, 424_575),  # one learned lambda per cascade
])
def test_parameter_count_of_the_thesis_configuration(kwargs, expected):
    with torch.device("meta"):
        model = CascadeNet(**kwargs)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("shape", [(16, 12), (15, 13)])
def test_output_shapes_multicoil_and_single_coil(shape):
    model = CascadeNet(**TINY)
    kspace, mask, smaps = random_inputs(3, 4, shape)
    out = model(kspace, mask, smaps)
    assert out.shape == (3, *shape) and out.dtype == torch.float32 and bool((out >= 0).all())
    single = model(kspace[:, :1], mask)
    assert single.shape == (3, *shape)
    assert torch.equal(model(kspace[:, 0], mask), single)  # [B, ky, kx, 2] single-coil layout too


def test_single_coil_with_maps_of_ones_equals_the_form_without_maps():
    model = CascadeNet(**TINY)
    kspace, mask, _ = random_inputs(2, 1, (16, 16))
    ones = torch.stack([torch.ones(2, 1, 16, 16), torch.zeros(2, 1, 16, 16)], dim=-1)
    assert torch.allclose(model(kspace, mask, ones), model(kspace, mask), atol=1e-6)


def test_replacement_keeps_the_measured_samples_single_coil():
    torch.manual_seed(0)
    model = CascadeNet(**TINY)
    kspace, mask, _ = random_inputs(2, 1, (16, 16))
    image, final_kspace = model.reconstruct(kspace, mask)
    measured = torch.view_as_complex(kspace)
    sampled = mask.bool().expand_as(measured)
    assert torch.allclose(fft2c(image)[sampled], measured[sampled], atol=1e-5)
    assert torch.allclose(final_kspace[sampled], measured[sampled], atol=1e-5)


def test_fully_sampled_multicoil_with_replacement_returns_the_measured_kspace_and_sense_image():
    torch.manual_seed(0)
    model = CascadeNet(**TINY)
    kspace, mask, smaps = _fully_sampled(2, 3, (16, 12), seed=1)
    image, final_kspace = model.reconstruct(kspace, mask, smaps)
    measured = torch.view_as_complex(kspace)
    assert torch.allclose(final_kspace, measured, atol=1e-5)
    expected = sense_adjoint(measured, torch.view_as_complex(smaps), mask.bool())
    assert torch.allclose(image[:, 0], expected, atol=1e-5)
    assert torch.allclose(model(kspace, mask, smaps), expected.abs(), atol=1e-5)


def test_weighted_consistency_is_the_noise_aware_average_at_sampled_points():
    g = torch.Generator().manual_seed(0)
    predicted = torch.complex(torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g))
    measured = torch.complex(torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g))
    mask = (torch.rand(2, 1, 8, 8, generator=g) < 0.5).float()
    noise_lambda = 3.0
    out = WeightedConsistency(noise_lambda, learn=False)(predicted, mask * measured, mask)
    expected = torch.where(mask.bool(), (predicted + noise_lambda * measured) / (1 + noise_lambda), predicted)
    assert torch.allclose(out, expected, atol=1e-6)
    replaced = data_consistency(None, False)(predicted, mask * measured, mask)
    assert torch.equal(replaced, torch.where(mask.bool(), measured, predicted))


def test_zero_cnns_return_the_zero_filled_image():
    (kspace, mask), _ = _single_coil_example()
    model = CascadeNet(**TINY)
    for parameter in model.parameters():
        nn.init.zeros_(parameter)
    expected = ifft2c(torch.view_as_complex(kspace[:, 0])).abs()
    assert torch.allclose(model(kspace, mask), expected, atol=1e-6)


@pytest.mark.parametrize("multicoil", [True, False])
def test_a_few_adam_steps_reduce_the_loss(multicoil):
    torch.manual_seed(0)
    if multicoil:
        prepared, target = prepared_example()  # 32x32, 4 coils, 4x
        inputs = prepared.to_network_inputs()
    else:
        inputs, target = _single_coil_example()
    losses = fit_losses(CascadeNet(**TINY), inputs, target, steps=15, lr=1e-3)
    assert losses[-1] < 0.95 * losses[0]


def test_gradients_reach_every_parameter_including_learned_lambdas():
    model = CascadeNet(**TINY, dc_lambda=5.0, learn_lambda=True)
    assert_gradients_reach_all_parameters(model, random_inputs(2, 3, (16, 16)))


def test_scripts_and_exports_multicoil_with_dynamic_batch_coil_and_spatial_axes():
    torch.manual_seed(0)
    model = CascadeNet(**TINY, dc_lambda=2.0, learn_lambda=True)
    example = random_inputs(2, 3, (16, 16), seed=1)
    other_batch = random_inputs(3, 3, (16, 16), seed=2)
    other_sizes = [random_inputs(1, 4, (20, 24), seed=3), random_inputs(2, 5, (17, 13), seed=4)]
    dynamic = [(1, 2, 3), (2, 3), (1, 2, 3)]  # kspace [B, C, ky, kx, 2], mask [B, 1, ky, kx], smaps
    assert assert_exports(model, example, other_batch, dynamic_dims=dynamic, other_size_inputs=other_sizes) == "script"


def test_scripts_and_exports_single_coil_without_maps():
    torch.manual_seed(0)
    model = CascadeNet(**TINY)
    example = random_inputs(2, 1, (16, 16), seed=1)[:2]
    other_batch = random_inputs(3, 1, (16, 16), seed=2)[:2]
    assert assert_exports(model, example, other_batch) == "script"


def test_registered_and_rejects_bad_arguments():
    assert isinstance(build_network("cascadenet", **TINY), CascadeNet)
    with pytest.raises(ValueError, match="n_cascades"):
        CascadeNet(n_cascades=0)
    with pytest.raises(ValueError, match="learn_lambda needs a finite"):
        CascadeNet(learn_lambda=True)
    with pytest.raises(ValueError, match="dc_lambda must be a positive"):
        CascadeNet(dc_lambda=-1.0)
    kspace, mask, _ = random_inputs(1, 3, (8, 8))
    with pytest.raises(ValueError, match="no smaps"):
        CascadeNet(**TINY)(kspace, mask)
