from __future__ import annotations

import pytest
import torch
from torch import nn

from mrdserve.models.nets.kiki import KIKINet, fold_coils, unfold_coils
from mrdserve.models.nets.registry import build_network
from mrdserve.models.physics.sense import sense_adjoint
from tests.nets.cartesian_inputs import prepared_example, random_inputs

TINY = {"n_iter": 2, "n_layers": 2, "n_filters": 8}


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


def test_kspace_cnn_sees_each_coil_alone():
    kspace = torch.view_as_complex(random_inputs(2, 3, (8, 6))[0])
    folded = fold_coils(kspace)
    assert folded.shape == (6, 2, 8, 6)
    assert torch.equal(folded[4, 0], kspace[1, 1].real) and torch.equal(folded[4, 1], kspace[1, 1].imag)
    assert torch.equal(unfold_coils(folded, kspace), kspace)


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
