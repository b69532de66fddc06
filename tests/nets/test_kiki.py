from __future__ import annotations

import pytest
import torch
from torch import nn

from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.nets.kiki import KIKINet, fold_coils, unfold_coils
from mrdserve.models.nets.registry import build_network
from mrdserve.models.physics.fft import fft2c, ifft2c
from mrdserve.models.physics.masks import EquispacedFractionMask
from mrdserve.models.physics.prepare_cartesian import prepare_cartesian
from mrdserve.models.physics.sense import sense_adjoint
from tests.nets.cartesian_inputs import fit_losses, prepared_example, random_inputs
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters

TINY = {"n_iter": 2, "n_layers": 2, "n_filters": 8}


def _single_coil_example() -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    image = complex_phantom_2d((32, 32), seed=0)
    mask = EquispacedFractionMask([0.125], [4])(32, seed=0).kspace_mask()
    prepared = prepare_cartesian(fft2c(image).unsqueeze(0), mask)
    return prepared.to_network_inputs(with_smaps=False), image.abs().unsqueeze(0) / prepared.scale.reshape(-1, 1, 1)


@pytest.mark.parametrize(("kwargs", "expected"), [
    # per block: conv 2->32 (608) + 24 x conv 32->32 (9,248) + 1x1 conv 32->2 (66) = 222,626; K-I-K-I: 4 blocks
    ({}, 890_504),
    ({"dc_lambda": 10.0, "learn_lambda": True}, 890_506),  # one learned lambda per iteration
    ({"n_iter": 3}, 1_335_756),  # K-I-K-I-K-I
    ({"output_kernel_size": 3}, 892_552),  # 3x3 output convs: 578 instead of 66 per block
])
def test_parameter_count_of_the_thesis_configuration(kwargs, expected):
    with torch.device("meta"):
        model = KIKINet(**kwargs)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_every_block_of_the_thesis_configuration_has_222_626_parameters():
    with torch.device("meta"):
        model = KIKINet()
    blocks = [*model.kspace_nets, *model.image_nets]
    assert len(blocks) == 4 and all(sum(p.numel() for p in b.parameters()) == 222_626 for b in blocks)
    assert len(model.kspace_nets[0].layers) == 2 * 25 + 1  # 25 conv3x3-ReLU pairs and the 1x1 output conv


@pytest.mark.parametrize("shape", [(16, 12), (15, 13)])
def test_output_shapes_multicoil_and_single_coil(shape):
    model = KIKINet(**TINY)
    kspace, mask, smaps = random_inputs(3, 4, shape)
    out = model(kspace, mask, smaps)
    assert out.shape == (3, *shape) and out.dtype == torch.float32 and bool((out >= 0).all())
    single = model(kspace[:, :1], mask)
    assert single.shape == (3, *shape)
    assert torch.equal(model(kspace[:, 0], mask), single)  # [B, ky, kx, 2] single-coil layout too


def test_single_coil_with_maps_of_ones_equals_the_form_without_maps():
    model = KIKINet(**TINY)
    kspace, mask, _ = random_inputs(2, 1, (16, 16))
    ones = torch.stack([torch.ones(2, 1, 16, 16), torch.zeros(2, 1, 16, 16)], dim=-1)
    assert torch.allclose(model(kspace, mask, ones), model(kspace, mask), atol=1e-6)


def test_kspace_cnn_sees_each_coil_alone():
    kspace = torch.view_as_complex(random_inputs(2, 3, (8, 6))[0])
    folded = fold_coils(kspace)
    assert folded.shape == (6, 2, 8, 6)
    assert torch.equal(folded[4, 0], kspace[1, 1].real) and torch.equal(folded[4, 1], kspace[1, 1].imag)
    assert torch.equal(unfold_coils(folded, kspace), kspace)


def test_replacement_keeps_the_measured_samples_single_coil():
    torch.manual_seed(0)
    model = KIKINet(**TINY)
    kspace, mask, _ = random_inputs(2, 1, (16, 16))
    image, final_kspace = model.reconstruct(kspace, mask)
    measured = torch.view_as_complex(kspace)
    sampled = mask.bool().expand_as(measured)
    assert torch.allclose(fft2c(image)[sampled], measured[sampled], atol=1e-5)
    assert torch.allclose(final_kspace[sampled], measured[sampled], atol=1e-5)


def test_fully_sampled_multicoil_with_replacement_returns_the_measured_kspace_and_sense_image():
    torch.manual_seed(0)
    model = KIKINet(**TINY)
    kspace, _, smaps = random_inputs(2, 3, (16, 12), seed=1, normalise_maps=True)
    kspace = torch.randn(kspace.shape, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(2, 1, 16, 12)
    image, final_kspace = model.reconstruct(kspace, mask, smaps)
    measured = torch.view_as_complex(kspace)
    assert torch.allclose(final_kspace, measured, atol=1e-5)
    expected = sense_adjoint(measured, torch.view_as_complex(smaps), mask.bool())
    assert torch.allclose(model(kspace, mask, smaps), expected.abs(), atol=1e-5)
    assert torch.allclose(image[:, 0], expected, atol=1e-5)


def test_zero_blocks_return_the_zero_filled_image():
    # KCNNs output 0, the ICNNs are the identity, data consistency puts the measured samples back
    (kspace, mask), _ = _single_coil_example()
    model = KIKINet(**TINY)
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
    losses = fit_losses(KIKINet(**TINY), inputs, target, steps=15, lr=1e-3)
    assert losses[-1] < 0.95 * losses[0]


def test_gradients_reach_every_parameter_including_learned_lambdas():
    model = KIKINet(**TINY, dc_lambda=5.0, learn_lambda=True)
    assert_gradients_reach_all_parameters(model, random_inputs(2, 3, (16, 16)))


@pytest.mark.parametrize(("stage", "trained"), [
    (0, ("kspace_nets.0.",)),
    (1, ("image_nets.0.", "consistency.0.")),
    (2, ("kspace_nets.1.",)),
    (3, ("image_nets.1.", "consistency.1.")),
])
def test_training_stage_freezes_all_but_the_current_block(stage, trained):
    model = KIKINet(**TINY, dc_lambda=5.0, learn_lambda=True)
    returned = model.set_training_stage(stage)
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names == {name for name, _ in model.named_parameters() if name.startswith(trained)}
    assert {id(p) for p in returned} == {id(p) for name, p in model.named_parameters() if name in names}
    assert model.active_blocks == stage + 1 and model.training_stage == stage
    # a backward pass reaches exactly the trained block
    model(*random_inputs(2, 3, (12, 12))).square().sum().backward()
    for name, parameter in model.named_parameters():
        assert (parameter.grad is not None) == (name in names), name
    model.set_training_stage(None)
    assert all(p.requires_grad for p in model.parameters()) and model.active_blocks == 4
    assert model.training_stage is None


def test_stage_forward_stops_after_the_current_block():
    torch.manual_seed(0)
    model = KIKINet(**TINY)
    kspace, mask, smaps = random_inputs(2, 3, (12, 10), seed=2)
    # stage 1 (K1 then I1 + data consistency) is the one-iteration KIKI-net with the first blocks' weights
    one_iteration = KIKINet(**{**TINY, "n_iter": 1})
    one_iteration.load_state_dict({k: v for k, v in model.state_dict().items() if k.split(".")[1] == "0"})
    model.set_training_stage(1)
    assert torch.allclose(model(kspace, mask, smaps), one_iteration(kspace, mask, smaps), atol=1e-6)
    # stage 0: the first KCNN only, seen through the SENSE combination
    model.set_training_stage(0)
    measured = torch.view_as_complex(kspace) * mask
    corrected = unfold_coils(model.kspace_nets[0](fold_coils(measured)), measured)
    expected = sense_adjoint(corrected, torch.view_as_complex(smaps), torch.ones_like(mask).bool()).abs()
    assert torch.allclose(model(kspace, mask, smaps), expected, atol=1e-6)


def test_stage_wise_training_updates_only_the_current_block():
    torch.manual_seed(0)
    prepared, target = prepared_example()
    inputs = prepared.to_network_inputs()
    model = KIKINet(**TINY)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for stage in range(model.n_blocks):
        trainable = model.set_training_stage(stage)
        optimiser = torch.optim.Adam(trainable, lr=1e-3)
        for _ in range(2):
            loss = nn.functional.mse_loss(model(*inputs), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        for name, parameter in model.named_parameters():
            block = name.split(".")[0] + "." + name.split(".")[1]
            trained_so_far = {f"{'kspace_nets' if s % 2 == 0 else 'image_nets'}.{s // 2}" for s in range(stage + 1)}
            changed = not torch.equal(parameter.detach(), before[name])
            assert changed == (block in trained_so_far), (stage, name)
    model.set_training_stage(None)
    assert all(p.requires_grad for p in model.parameters())


def test_scripts_and_exports_multicoil_with_dynamic_batch_coil_and_spatial_axes():
    torch.manual_seed(0)
    model = KIKINet(n_iter=1, n_layers=2, n_filters=8, dc_lambda=2.0, learn_lambda=True)
    example = random_inputs(2, 3, (16, 16), seed=1)
    other_batch = random_inputs(3, 3, (16, 16), seed=2)
    other_sizes = [random_inputs(1, 4, (20, 24), seed=3), random_inputs(2, 5, (17, 13), seed=4)]
    dynamic = [(1, 2, 3), (2, 3), (1, 2, 3)]  # kspace [B, C, ky, kx, 2], mask [B, 1, ky, kx], smaps
    assert assert_exports(model, example, other_batch, dynamic_dims=dynamic, other_size_inputs=other_sizes) == "script"


def test_scripts_and_exports_single_coil_without_maps():
    torch.manual_seed(0)
    model = KIKINet(**TINY)
    example = random_inputs(2, 1, (16, 16), seed=1)[:2]
    other_batch = random_inputs(3, 1, (16, 16), seed=2)[:2]
    assert assert_exports(model, example, other_batch) == "script"


def test_registered_and_rejects_bad_arguments():
    assert isinstance(build_network("kikinet", **TINY), KIKINet)
    with pytest.raises(ValueError, match="n_iter"):
        KIKINet(n_iter=0)
    with pytest.raises(ValueError, match="output_kernel_size"):
        KIKINet(output_kernel_size=2)
    with pytest.raises(ValueError, match="learn_lambda needs a finite"):
        KIKINet(learn_lambda=True)
    with pytest.raises(ValueError, match=r"stage must be in \[0, 4\)"):
        KIKINet(**TINY).set_training_stage(4)
    kspace, mask, _ = random_inputs(1, 3, (8, 8))
    with pytest.raises(ValueError, match="no smaps"):
        KIKINet(**TINY)(kspace, mask)
