from __future__ import annotations

import pytest
import torch
from torch import nn

from mrdserve.models.nets.conv_stack import ConvStack
from mrdserve.models.nets.kiki import KIKINet, fold_coils, unfold_coils
from mrdserve.models.nets.registry import build_network
from mrdserve.models.physics.fft import ifft2c
from mrdserve.models.physics.sense import sense_adjoint
from tests.nets.cartesian_inputs import prepared_example, random_inputs

TINY = {"n_iter": 2, "n_layers": 2, "n_filters": 8}
REFERENCE_FORM = {"negative_slope": 0.0, "kspace_residual": False, "init": "default"}  # what did not train


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with random weights (a freshly built KIKI-net is the identity: its output convs are zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=g))
    return model


@pytest.mark.parametrize(("kwargs", "expected"), [
    # per block: conv 2->48 (912) + 15 x conv 48->48 (20,784) + 1x1 conv 48->2 (98) = 312,770; K-I-K-I: 4 blocks
    ({}, 1_251_080),  # the thesis: about 1.25M
    ({"dc_lambda": 10.0, "learn_lambda": True}, 1_251_082),  # one learned lambda per iteration
    ({"n_iter": 3}, 1_876_620),  # K-I-K-I-K-I
    ({"output_kernel_size": 3}, 1_254_152),  # 3x3 output convs: 866 instead of 98 per block
    ({"n_layers": 25, "n_filters": 32}, 890_504),  # the reference's other kiki_net setting (25 x 32, 222,626 a block)
])
def test_parameter_count_of_the_thesis_configuration(kwargs, expected):
    with torch.device("meta"):
        model = KIKINet(**kwargs)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_every_block_of_the_thesis_configuration_has_312_770_parameters():
    with torch.device("meta"):
        model = KIKINet()
    blocks = [*model.kspace_nets, *model.image_nets]
    assert len(blocks) == 4 and all(sum(p.numel() for p in b.parameters()) == 312_770 for b in blocks)
    layers = model.kspace_nets[0].layers
    assert len(layers) == 2 * 16 + 1  # 16 conv3x3 + leaky ReLU pairs and the 1x1 output conv
    assert isinstance(layers[1], nn.LeakyReLU) and layers[1].negative_slope == 0.1
    assert layers[-1].kernel_size == (1, 1) and model.n_stages == 4


def _input_gain(stack: ConvStack, seed: int = 0) -> float:
    """How much of a change of the input reaches the last hidden layer (std ratio of the differences)."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(2, 1, 2, 16, 16, generator=g)
    hidden = stack.layers[:-1]
    with torch.no_grad():
        return float((hidden(x) - hidden(y)).std() / (x - y).std())


def test_deep_blocks_pass_their_input_on_only_with_the_zero_output_initialisation():
    """The root cause: torch's default initialisation shrinks the signal ~6x in variance per conv-ReLU layer, so
    a 16-layer block is a constant function of its input (and its early layers get no gradient); He-initialised
    hidden convs keep it, and the zero output conv makes the block start at 0 (a residual block at the identity)."""
    torch.manual_seed(0)
    default = ConvStack(2, 48, 16, 1, negative_slope=0.1, init="default")
    zero_output = ConvStack(2, 48, 16, 1, negative_slope=0.1, init="zero-output")
    assert _input_gain(default) < 1e-4
    assert 0.2 < _input_gain(zero_output) < 5.0
    assert torch.equal(zero_output(torch.randn(1, 2, 8, 8)), torch.zeros(1, 2, 8, 8))


def test_untrained_network_is_the_zero_filled_reconstruction_at_every_stage():
    """Every block starts as the identity (residual KCNN and ICNN, zero output convs): single coil, the fresh
    network and the network stopped after any block return the zero-filled image; multicoil, stopped after the
    first KCNN it returns the SENSE-combined one, and a starting KCNN leaves the image of the blocks before it."""
    torch.manual_seed(0)
    kspace, mask, smaps = random_inputs(2, 3, (12, 10), seed=4)
    model = KIKINet(**TINY)
    single = kspace[:, :1]
    zero_filled = ifft2c(torch.view_as_complex(single[:, 0]) * mask[:, 0]).abs()
    for stage in [None, 0, 1, 2, 3]:
        model.set_training_stage(stage)
        assert torch.allclose(model(single, mask), zero_filled, atol=1e-5), stage
    outputs = []
    for stage in range(4):
        model.set_training_stage(stage)
        outputs.append(model(kspace, mask, smaps))
    sense = sense_adjoint(torch.view_as_complex(kspace) * mask, torch.view_as_complex(smaps),
                          torch.ones_like(mask).bool()).abs()
    assert torch.allclose(outputs[0], sense, atol=1e-5) and torch.allclose(outputs[2], outputs[1], atol=1e-5)


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


@pytest.mark.parametrize("form", [{}, REFERENCE_FORM], ids=["default", "reference"])
def test_stage_forward_stops_after_the_current_block(form):
    torch.manual_seed(0)
    model = randomised(KIKINet(**TINY, **form))
    kspace, mask, smaps = random_inputs(2, 3, (12, 10), seed=2)
    # stage 1 (K1 then I1 + data consistency) is the one-iteration KIKI-net with the first blocks' weights
    one_iteration = KIKINet(**{**TINY, "n_iter": 1}, **form)
    one_iteration.load_state_dict({k: v for k, v in model.state_dict().items() if k.split(".")[1] == "0"})
    model.set_training_stage(1)
    assert torch.allclose(model(kspace, mask, smaps), one_iteration(kspace, mask, smaps), atol=1e-6)
    # stage 0: the first KCNN only, seen through the SENSE combination
    model.set_training_stage(0)
    measured = torch.view_as_complex(kspace) * mask
    corrected = unfold_coils(model.kspace_nets[0](fold_coils(measured)), measured)
    if model.kspace_residual:
        corrected = measured + corrected
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
    with pytest.raises(ValueError, match="negative_slope"):
        KIKINet(negative_slope=1.5)
    with pytest.raises(ValueError, match="init must be one of default, zero-output"):
        KIKINet(init="he")
    with pytest.raises(ValueError, match="learn_lambda needs a finite"):
        KIKINet(learn_lambda=True)
    with pytest.raises(ValueError, match=r"stage must be in \[0, 4\)"):
        KIKINet(**TINY).set_training_stage(4)
    kspace, mask, _ = random_inputs(1, 3, (8, 8))
    with pytest.raises(ValueError, match="no smaps"):
        KIKINet(**TINY)(kspace, mask)
