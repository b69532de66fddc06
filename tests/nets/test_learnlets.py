from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from mrdserve.models.nets.learnlets import (
    Learnlets,
    LearnletsPrior,
    _low_pass_kernels,
    band_noise_autocovariance,
    collapse,
    pyramid,
)
from mrdserve.models.nets.ncpdnet import NCPDNet
from mrdserve.models.nets.registry import build_network
from mrdserve.models.nets.xpdnet import XPDNet
from tests.nets.cartesian_inputs import random_inputs
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters

TINY = {"n_scales": 2, "n_filters": 4, "analysis_size": 3, "synthesis_size": 5}
TINY_PRIOR = {"n_scales": 1, "n_filters": 2, "analysis_size": 3, "synthesis_size": 3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _images(batch: int, shape: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.rand(batch, 1, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("exact", "expected"), [
    # per scale: 256 x 11 x 11 analysis + 256 x 13 x 13 synthesis (+ the fixed identity) + 2 levels; x 5 scales
    (True, 371_210),
    # per scale: 256 x 11 x 11 analysis + 257 x 13 x 13 synthesis (the identity's learned too) + 2 levels; x 5
    (False, 372_055),
])
def test_parameter_count_of_the_thesis_configuration(exact, expected):
    with torch.device("meta"):
        model = Learnlets(exact_reconstruction=exact)
    assert _count(model) == expected
    assert _count(model) == 5 * (256 * 121 + (256 + (not exact)) * 169 + 2)


@pytest.mark.parametrize("shape", [(16, 16), (23, 17), (5, 9)])
def test_sigma_zero_returns_the_input_exactly(shape):
    torch.manual_seed(0)
    model = Learnlets(n_scales=3, n_filters=4, analysis_size=5, synthesis_size=5)
    image = _images(2, shape, seed=1)
    assert torch.allclose(model(image, torch.zeros(2)), image, rtol=0, atol=1e-6)
    row, column = _low_pass_kernels()
    assert torch.allclose(collapse(*pyramid(image, 3, row, column)), image, rtol=0, atol=1e-6)


def test_without_exact_reconstruction_sigma_zero_is_a_learned_linear_map():
    torch.manual_seed(0)
    model = Learnlets(exact_reconstruction=False, **TINY)
    image = _images(1, (16, 16), seed=2)
    assert (model(image, torch.zeros(1)) - image).abs().max() > 1e-2


def test_a_huge_sigma_keeps_only_the_coarse_image():
    torch.manual_seed(0)
    model = Learnlets(**TINY)
    image = _images(2, (16, 12), seed=3)
    row, column = _low_pass_kernels()
    details, coarse = pyramid(image, 2, row, column)
    expected = collapse([torch.zeros_like(d) for d in details], coarse)
    assert torch.allclose(model(image, torch.full((2, 1), 1e3)), expected, atol=1e-6)


def test_filters_have_unit_norm_after_every_step_and_scale_free_weights():
    torch.manual_seed(0)
    model = Learnlets(**TINY)
    image = _images(2, (16, 16), seed=4)
    sigma = torch.tensor([0.05, 0.1])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        optimiser.zero_grad()
        model(image, sigma).square().mean().backward()
        optimiser.step()
    for scale in model.scales:
        norms = scale.unit_filters().square().sum(dim=(1, 2, 3)).sqrt()
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)
    before = model(image, sigma)
    with torch.no_grad():
        for scale in model.scales:
            scale.analysis.mul_(3.7)  # the forward normalises: raw filter scale does not matter
    assert torch.allclose(model(image, sigma), before, atol=1e-6)


def test_threshold_levels_are_clamped_to_zero_five():
    torch.manual_seed(0)
    model = Learnlets(**TINY)
    image = _images(1, (16, 16), seed=5)
    sigma = torch.tensor([0.05])
    with torch.no_grad():
        for scale in model.scales:
            scale.levels.copy_(torch.tensor([5.0, 0.0]))
        clamped = model(image, sigma)
        for scale in model.scales:
            scale.levels.copy_(torch.tensor([9.0, -2.0]))
        assert torch.allclose(model(image, sigma), clamped)


def test_thresholds_are_normalised_by_each_filters_response_to_white_noise():
    torch.manual_seed(0)
    model = Learnlets(n_scales=3, n_filters=6, analysis_size=5, synthesis_size=5)
    noise = torch.randn(4, 1, 256, 256, generator=torch.Generator().manual_seed(6))
    details, _ = pyramid(noise, 3, model.low_pass_row, model.low_pass_column)
    for detail, scale in zip(details, model.scales, strict=True):
        filters = scale.unit_filters()
        inner = detail[:, :, 12:-12, 12:-12]  # away from the replicated borders
        measured = functional.conv2d(inner, filters).std(dim=(0, 2, 3))
        assert torch.allclose(scale.coefficient_std(filters), measured, rtol=0.05)
        identity_std = scale.autocovariance[0, 0, scale.centre, scale.centre].sqrt()
        assert torch.allclose(identity_std, inner.std(), rtol=0.05)
    # R_j is an autocovariance: symmetric, largest at lag 0
    covariance = band_noise_autocovariance(3, 4)
    assert torch.allclose(covariance, covariance.flip(1).flip(2))
    assert bool((covariance.abs().flatten(1).argmax(1) == 40).all())


def test_positively_homogeneous_and_sigma_shapes():
    torch.manual_seed(0)
    model = Learnlets(**TINY)
    image = _images(2, (12, 16), seed=7)
    sigma = torch.tensor([0.05, 0.2])
    out = model(image, sigma)
    assert out.shape == image.shape
    assert torch.allclose(model(image, sigma.unsqueeze(1)), out)
    assert torch.allclose(model(4.0 * image, 4.0 * sigma), 4.0 * out, atol=1e-5)


def test_registered_and_rejects_bad_arguments():
    assert isinstance(build_network("learnlets", **TINY), Learnlets)
    with pytest.raises(ValueError, match="analysis_size must be odd"):
        Learnlets(analysis_size=4)
    with pytest.raises(ValueError, match="n_scales"):
        Learnlets(n_scales=0)
    with pytest.raises(ValueError, match="sigma must be a positive"):
        LearnletsPrior(4, 2, sigma=0.0)


@pytest.mark.slow
def test_scripts_and_exports_with_dynamic_batch_and_spatial_axes():
    torch.manual_seed(0)
    model = Learnlets(**TINY)
    example = (_images(2, (16, 16), seed=9), torch.tensor([0.05, 0.1]))
    other_batch = (_images(3, (16, 16), seed=10), torch.tensor([0.02, 0.1, 0.3]))
    other_sizes = [(_images(1, (21, 13), seed=11), torch.tensor([0.07]))]
    how = assert_exports(model, example, other_batch, dynamic_dims=[(2, 3), ()], other_size_inputs=other_sizes)
    assert how == "script"


def test_prior_starts_as_one_proximal_gradient_step():
    torch.manual_seed(0)
    n_primal, step = 2, 0.5
    prior = LearnletsPrior(2 * (n_primal + 1), 2 * n_primal, sigma=0.1, step=step, **TINY)
    with torch.no_grad():
        for conv in (prior.mix, prior.out):  # drop the small random part of the initialisation
            conv.weight[conv.weight.abs() < 0.05] = 0.0
    features = torch.randn(2, 2 * (n_primal + 1), 16, 16, generator=torch.Generator().manual_seed(12))
    n_in = n_primal + 1
    buffer = torch.cat([features[:, :n_primal], features[:, n_in : n_in + n_primal]], dim=1)
    gradient = torch.cat([features[:, n_primal : n_in].expand(-1, n_primal, -1, -1),
                          features[:, -1:].expand(-1, n_primal, -1, -1)], dim=1)
    step_image = (buffer - step * gradient).reshape(-1, 1, 16, 16)
    expected = prior.denoiser(step_image, torch.full((step_image.shape[0],), 0.1)).reshape(buffer.shape) - buffer
    assert torch.allclose(prior(features), expected, atol=1e-5)


def test_xpdnet_with_learnlets_prior():
    torch.manual_seed(0)
    model = XPDNet(n_iter=2, n_primal=2, prior="learnlets", learnlets={"sigma": 0.1, **TINY_PRIOR})
    inputs = random_inputs(2, 3, (15, 12))
    assert model(*inputs).shape == (2, 15, 12)
    assert_gradients_reach_all_parameters(model, inputs)
    assert all(isinstance(net, LearnletsPrior) for net in model.image_nets)
    with torch.device("meta"):  # the default is untouched: same MWCNN, same parameter names
        default = XPDNet()
    assert _count(default) == 3_381_220 and all(k.startswith("image_nets.") for k in default.state_dict())
    with pytest.raises(ValueError, match="prior must be one of"):
        XPDNet(prior="bm3d")
    with pytest.raises(ValueError, match="needs prior='learnlets'"):
        XPDNet(learnlets={"n_filters": 4})


@pytest.mark.slow
def test_xpdnet_with_learnlets_scripts_and_exports():
    torch.manual_seed(0)
    model = XPDNet(n_iter=1, n_primal=2, prior="learnlets", learnlets={"sigma": 0.1, **TINY_PRIOR})
    example, other = random_inputs(2, 3, (16, 16), seed=1), random_inputs(3, 3, (16, 16), seed=2)
    assert assert_exports(model, example, other) == "script"


def _ncpdnet_inputs(batch: int, shape: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, 2, generator=g), 0.1 * torch.randn(batch, *(2 * n for n in shape), 2,
                                                                        generator=g)


def test_ncpdnet_with_learnlets_prior():
    torch.manual_seed(0)
    model = NCPDNet(n_iter=2, n_primal=2, prior="learnlets", learnlets={"sigma": 0.1, **TINY_PRIOR})
    inputs = _ncpdnet_inputs(2, (9, 8), seed=0)
    assert model(*inputs).shape == (2, 9, 8)
    assert_gradients_reach_all_parameters(model, inputs)
    assert _count(NCPDNet()) == 156_260  # the default is untouched
    with pytest.raises(ValueError, match="2D only"):
        NCPDNet(n_dims=3, prior="learnlets")
    with pytest.raises(ValueError, match="prior must be one of"):
        NCPDNet(prior="mwcnn")


@pytest.mark.slow
def test_ncpdnet_with_learnlets_scripts_and_exports():
    torch.manual_seed(0)
    model = NCPDNet(n_iter=1, n_primal=2, prior="learnlets", learnlets={"sigma": 0.1, **TINY_PRIOR})
    assert assert_exports(model, _ncpdnet_inputs(2, (8, 8), 1), _ncpdnet_inputs(3, (8, 8), 2)) == "script"
