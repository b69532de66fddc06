"""What Cascade-net and KIKI-net share (both alternate a CNN with data consistency in k-space, single-coil or
SENSE-combined multicoil): shapes in both forms, replacement keeping the measured samples, the zero-filled image
from zeroed CNNs, training, gradients and export. Their own parts are in test_cascade.py and test_kiki.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mrdserve.models.nets.cascade import CascadeNet
from mrdserve.models.nets.kiki import KIKINet
from mrdserve.models.physics.fft import fft2c, ifft2c
from mrdserve.models.physics.sense import sense_adjoint
from tests.nets.cartesian_inputs import fit_losses, prepared_example, random_inputs, single_coil_example
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters

TINY = {"cascade": (CascadeNet, {"n_cascades": 2, "n_layers": 2, "n_filters": 8}),
        "kiki": (KIKINet, {"n_iter": 2, "n_layers": 2, "n_filters": 8})}
EXPORTED = {"cascade": {"n_cascades": 2}, "kiki": {"n_iter": 1}}  # smaller for the multicoil ONNX export
NETS = sorted(TINY)


def tiny(name: str, **kwargs) -> nn.Module:
    network, defaults = TINY[name]
    return network(**{**defaults, **kwargs})


def randomised(model: nn.Module) -> nn.Module:
    """``model`` with every parameter perturbed, so that no block is the identity (KIKI-net starts as one: an
    export check of the identity would not see a wrong KCNN or ICNN)."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("shape", [(16, 12), (15, 13)])
def test_output_shapes_multicoil_and_single_coil(name, shape):
    model = tiny(name)
    kspace, mask, smaps = random_inputs(3, 4, shape)
    out = model(kspace, mask, smaps)
    assert out.shape == (3, *shape) and out.dtype == torch.float32 and bool((out >= 0).all())
    single = model(kspace[:, :1], mask)
    assert single.shape == (3, *shape)
    assert torch.equal(model(kspace[:, 0], mask), single)  # [B, ky, kx, 2] single-coil layout too


@pytest.mark.parametrize("name", NETS)
def test_single_coil_with_maps_of_ones_equals_the_form_without_maps(name):
    torch.manual_seed(0)
    model = randomised(tiny(name))
    kspace, mask, _ = random_inputs(2, 1, (16, 16))
    ones = torch.stack([torch.ones(2, 1, 16, 16), torch.zeros(2, 1, 16, 16)], dim=-1)
    assert torch.allclose(model(kspace, mask, ones), model(kspace, mask), atol=1e-6)


@pytest.mark.parametrize("name", NETS)
def test_replacement_keeps_the_measured_samples_single_coil(name):
    torch.manual_seed(0)
    model = randomised(tiny(name))
    kspace, mask, _ = random_inputs(2, 1, (16, 16))
    image, final_kspace = model.reconstruct(kspace, mask)
    measured = torch.view_as_complex(kspace)
    sampled = mask.bool().expand_as(measured)
    assert torch.allclose(fft2c(image)[sampled], measured[sampled], atol=1e-5)
    assert torch.allclose(final_kspace[sampled], measured[sampled], atol=1e-5)


@pytest.mark.parametrize("name", NETS)
def test_fully_sampled_multicoil_with_replacement_returns_the_measured_kspace_and_sense_image(name):
    torch.manual_seed(0)
    model = randomised(tiny(name))
    kspace, _, smaps = random_inputs(2, 3, (16, 12), seed=1, normalise_maps=True)
    kspace = torch.randn(kspace.shape, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(2, 1, 16, 12)
    image, final_kspace = model.reconstruct(kspace, mask, smaps)
    measured = torch.view_as_complex(kspace)
    assert torch.allclose(final_kspace, measured, atol=1e-5)
    expected = sense_adjoint(measured, torch.view_as_complex(smaps), mask.bool())
    assert torch.allclose(image[:, 0], expected, atol=1e-5)
    assert torch.allclose(model(kspace, mask, smaps), expected.abs(), atol=1e-5)


@pytest.mark.parametrize("form", [
    ("cascade", {}), ("kiki", {}), ("kiki", {"kspace_residual": False, "init": "default"})],
    ids=["cascade", "kiki", "kiki-reference-form"])
def test_zeroed_cnns_return_the_zero_filled_image(form):
    """Zeroed CNNs add nothing (residual image CNNs; KIKI's k-space CNNs are residual too, or, in the reference's
    non-residual form, output 0): data consistency puts the measured samples back, leaving the zero-filled image."""
    name, kwargs = form
    (kspace, mask), _ = single_coil_example()
    model = tiny(name, **kwargs)
    for parameter in model.parameters():
        nn.init.zeros_(parameter)
    expected = ifft2c(torch.view_as_complex(kspace[:, 0])).abs()
    assert torch.allclose(model(kspace, mask), expected, atol=1e-6)


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("multicoil", [True, False])
def test_a_few_adam_steps_reduce_the_loss(name, multicoil):
    torch.manual_seed(0)
    if multicoil:
        prepared, target = prepared_example()  # 32x32, 4 coils, 4x
        inputs = prepared.to_network_inputs()
    else:
        inputs, target = single_coil_example()
    losses = fit_losses(tiny(name), inputs, target, steps=15, lr=1e-3)
    assert losses[-1] < 0.95 * losses[0]


@pytest.mark.parametrize("name", NETS)
def test_gradients_reach_every_parameter_including_learned_lambdas(name):
    """On random weights: KIKI-net's output convs start at zero (each block the identity), which by design
    leaves the layers before them without gradient until the first step."""
    torch.manual_seed(0)
    model = randomised(tiny(name, dc_lambda=5.0, learn_lambda=True))
    assert_gradients_reach_all_parameters(model, random_inputs(2, 3, (16, 16)))


@pytest.mark.parametrize("name", NETS)
def test_scripts_and_exports_multicoil_with_dynamic_batch_coil_and_spatial_axes(name):
    torch.manual_seed(0)
    model = randomised(tiny(name, dc_lambda=2.0, learn_lambda=True, **EXPORTED[name]))
    example = random_inputs(2, 3, (16, 16), seed=1)
    other_batch = random_inputs(3, 3, (16, 16), seed=2)
    other_sizes = [random_inputs(1, 4, (20, 24), seed=3), random_inputs(2, 5, (17, 13), seed=4)]
    dynamic = [(1, 2, 3), (2, 3), (1, 2, 3)]  # kspace [B, C, ky, kx, 2], mask [B, 1, ky, kx], smaps
    assert assert_exports(model, example, other_batch, dynamic_dims=dynamic, other_size_inputs=other_sizes) == "script"


@pytest.mark.parametrize("name", NETS)
def test_scripts_and_exports_single_coil_without_maps(name):
    torch.manual_seed(0)
    model = randomised(tiny(name))
    example = random_inputs(2, 1, (16, 16), seed=1)[:2]
    other_batch = random_inputs(3, 1, (16, 16), seed=2)[:2]
    assert assert_exports(model, example, other_batch) == "script"
