from __future__ import annotations

import pytest
import torch

from mrdserve.models.nets.irim import IRIM
from mrdserve.models.physics.sense import sense_adjoint
from tests.nets.cartesian_inputs import fit_losses, prepared_example, random_inputs
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters
from tests.nets.test_rim import one_thread

__all__ = ["one_thread"]  # the fixture, imported for the overfit test


def _tiny(**kwargs) -> IRIM:
    return IRIM(n_steps=2, n_channels=6, n_layers=2, hidden=8, **kwargs)


@pytest.mark.parametrize("shape", [(16, 12), (15, 13)])
@pytest.mark.parametrize("training", [False, True])
def test_forward_shape_odd_and_even_in_both_modes(shape, training):
    model = _tiny().train(training)
    out = model(*random_inputs(3, 4, shape))
    assert out.shape == (3, *shape) and bool((out >= 0).all())


def test_invertible_and_plain_forward_agree():
    torch.manual_seed(0)
    model = _tiny()
    inputs = random_inputs(2, 3, (12, 10))
    with torch.no_grad():
        plain = model.eval()(*inputs)
    assert torch.allclose(model.train()(*inputs), plain, atol=1e-5)


def test_inversion_of_the_whole_step_stack_reconstructs_the_initial_state():
    torch.manual_seed(0)
    model = _tiny().eval()
    prepared, _ = prepared_example()
    kspace, mask, smaps = prepared.to_network_inputs()
    measured, maps = prepared.kspace, prepared.smaps
    with torch.no_grad():
        state = model.initial_state(measured, mask, maps)
        state = state + torch.randn_like(state)  # memory channels too
        context = [measured, mask, maps]
        final = state
        for block in model.blocks():
            final = block(final, context)
        assert not torch.allclose(final, state, atol=1e-2)
        assert (model.inverse_state(final, kspace, mask, smaps) - state).abs().max() < 1e-5


def test_invertible_backprop_gradients_equal_ordinary_backprop_in_float64():
    torch.manual_seed(0)
    model = _tiny().double().train()
    kspace, mask, smaps = (t.double() for t in random_inputs(2, 3, (12, 10)))
    weights = torch.randn(2, 12, 10, dtype=torch.float64)

    def gradients(invertible: bool) -> list[torch.Tensor]:
        model.invertible_backprop = invertible
        model.zero_grad()
        k = kspace.clone().requires_grad_(True)  # gradients must also reach the data through the DC updates
        (weights * model(k, mask, smaps)).sum().backward()
        return [k.grad] + [p.grad for p in model.parameters()]

    ordinary, invertible = gradients(False), gradients(True)
    for a, b in zip(ordinary, invertible, strict=True):
        assert (a - b).norm() / a.norm() < 1e-4


@pytest.mark.parametrize("invertible", [True, False])
def test_gradients_reach_every_parameter(invertible):
    model = _tiny(invertible_backprop=invertible).train()
    assert_gradients_reach_all_parameters(model, random_inputs(2, 3, (12, 12)))


def test_initial_state_holds_the_zero_filled_image_and_zeros():
    prepared, _ = prepared_example()
    state = _tiny().initial_state(prepared.kspace, prepared.mask.float(), prepared.smaps)
    expected = sense_adjoint(prepared.kspace, prepared.smaps, prepared.mask)
    assert torch.allclose(torch.complex(state[:, 0], state[:, 1]), expected, atol=1e-6)
    assert bool((state[:, 2:] == 0).all())


def test_parameter_count_of_the_default_model():
    # per layer: Householder 3x16; down conv 8->64 (k=2: 2,048+64+64, k=4: 8,192+64+64); 3x3 64->64
    # (36,864+64+64); transposed 64->16 (k=2: 4,096+64, k=4: 16,384+64)
    assert sum(p.numel() for p in IRIM().parameters()) == 4_207_360


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_channels"):
        IRIM(n_channels=3)
    with pytest.raises(ValueError, match="downsampling"):
        IRIM(downsampling=(0,))


def test_scripts_and_exports_to_onnx_with_dynamic_batch_coil_and_spatial_axes():
    torch.manual_seed(0)
    model = IRIM(n_steps=1, n_channels=6, n_layers=2, hidden=8, downsampling=(2, 4))
    example = random_inputs(2, 3, (16, 16), seed=1)
    other_batch = random_inputs(3, 3, (16, 16), seed=2)
    other_sizes = [random_inputs(1, 4, (20, 24), seed=3), random_inputs(2, 2, (17, 13), seed=4)]
    dynamic = [(1, 2, 3), (2, 3), (1, 2, 3)]
    assert assert_exports(model, example, other_batch, dynamic_dims=dynamic, other_size_inputs=other_sizes) == "script"


@pytest.mark.slow
def test_tiny_irim_overfits_one_example_with_invertible_backprop(one_thread):
    torch.manual_seed(0)
    prepared, target = prepared_example()
    inputs = prepared.to_network_inputs()
    model = IRIM(n_steps=2, n_channels=8, n_layers=2, hidden=16).train()
    losses = fit_losses(model, inputs, target, steps=200, lr=5e-3)
    assert min(losses[-20:]) < losses[0] / 10
