from __future__ import annotations

import pytest
import torch
from torch import nn

from mrdserve.models.nets.rim import RIM
from mrdserve.models.physics.kernels import sense_gradient
from mrdserve.models.physics.sense import sense_adjoint, sense_forward
from tests.nets.cartesian_inputs import prepared_example, random_inputs
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters


def test_sense_gradient_matches_the_physics_operators():
    prepared, _ = prepared_example()
    image = torch.randn(1, 32, 32, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    expected = sense_adjoint(sense_forward(image, prepared.smaps, prepared.mask) - prepared.kspace,
                             prepared.smaps, prepared.mask)
    got = sense_gradient(image[:, None], prepared.kspace, prepared.smaps, prepared.mask.float()).squeeze(1)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(16, 12), (15, 13)])
def test_forward_and_steps_shapes_odd_and_even(shape):
    model = RIM(n_steps=3, hidden=8)
    inputs = random_inputs(3, 4, shape)
    steps = model.forward_steps(*inputs)
    assert len(steps) == 3 and all(s.shape == (3, *shape) for s in steps)
    assert torch.equal(model(*inputs), steps[-1]) and bool((steps[-1] >= 0).all())


def test_single_coil_with_maps_of_ones():
    kspace, mask, _ = random_inputs(2, 1, (12, 10))
    smaps = torch.stack([torch.ones(2, 1, 12, 10), torch.zeros(2, 1, 12, 10)], dim=-1)
    assert RIM(n_steps=2, hidden=8)(kspace, mask, smaps).shape == (2, 12, 10)


def test_zero_update_network_returns_the_zero_filled_image():
    prepared, _ = prepared_example()
    model = RIM(n_steps=2, hidden=8)
    nn.init.zeros_(model.cell.conv3.weight)
    expected = sense_adjoint(prepared.kspace, prepared.smaps, prepared.mask).abs()
    assert torch.allclose(model(*prepared.to_network_inputs()), expected, atol=1e-6)


def test_gradients_reach_every_parameter():
    assert_gradients_reach_all_parameters(RIM(n_steps=2, hidden=8), random_inputs(2, 3, (12, 12)))


def test_parameter_count_of_the_default_model():
    # conv 5x5 4->64 (6,464) + 2 GRUs 1x1 (2 x 24,960) + conv 3x3 64->64 (36,928) + conv 3x3 64->2 no bias
    # (1,152) + 8 gradient scales
    assert sum(p.numel() for p in RIM().parameters()) == 94_472


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_steps"):
        RIM(n_steps=0)


def test_scripts_and_exports_to_onnx_with_dynamic_batch_coil_and_spatial_axes():
    torch.manual_seed(0)
    model = RIM(n_steps=2, hidden=8)
    example = random_inputs(2, 3, (16, 16), seed=1)
    other_batch = random_inputs(3, 3, (16, 16), seed=2)
    other_sizes = [random_inputs(1, 4, (20, 24), seed=3), random_inputs(2, 2, (17, 13), seed=4)]
    dynamic = [(1, 2, 3), (2, 3), (1, 2, 3)]
    assert assert_exports(model, example, other_batch, dynamic_dims=dynamic, other_size_inputs=other_sizes) == "script"


@pytest.fixture
def one_thread():
    """Overfit loops on tiny tensors run ~100x faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_tiny_rim_overfits_one_example(one_thread):
    torch.manual_seed(0)
    prepared, target = prepared_example()
    inputs = prepared.to_network_inputs()
    model = RIM(n_steps=3, hidden=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        steps = model.forward_steps(*inputs)
        loss = torch.stack([nn.functional.mse_loss(s, target) for s in steps]).mean()  # as the trainer does
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(nn.functional.mse_loss(steps[-1], target).item())
    assert min(losses[-20:]) < losses[0] / 10
