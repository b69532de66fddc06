import pytest
import torch

from mrdserve.models.nets.registry import build_network
from mrdserve.models.nets.score import LipschitzConv, ScoreNet
from tests.nets.export_check import assert_exports

TINY = {"n_filters": 4, "n_scales": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _inputs(batch: int, shape: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, *shape, generator=generator)
    sigma = 0.01 + 0.5 * torch.rand(batch, generator=generator)
    return x, sigma


def _trained_a_little(model: ScoreNet) -> ScoreNet:
    """Random weights, a non-zero output scale, and one training forward (moves the power-iteration vectors)."""
    with torch.no_grad():
        model.output_scale.fill_(0.7)
    model.train()(*_inputs(1, (16, 16), seed=9))
    return model.eval()


def test_registered_shapes_and_any_matrix():
    model = build_network("score", **TINY)
    assert isinstance(model, ScoreNet) and model.spectral_norm
    for shape in ((16, 16), (13, 22)):  # odd sizes are padded to a multiple of 2^(n_scales - 1) inside
        x, sigma = _inputs(3, shape, seed=0)
        assert model(x, sigma).shape == x.shape


def test_starts_as_the_score_of_a_smoothed_gaussian_and_divides_the_network_by_sigma():
    """Output scale 0: s = -x / (sigma^2 + sigma_d^2), the exact score of N(0, sigma_d^2) smoothed at sigma.
    Doubling the head's output doubles the residual part, which scales as 1 / ((|sigma| + floor) spread)."""
    torch.manual_seed(0)
    model = ScoreNet(**TINY, sigma_data=0.4).eval()
    x, sigma = _inputs(2, (16, 16), seed=1)
    gaussian = -x / (sigma.reshape(-1, 1, 1, 1) ** 2 + 0.16)
    assert torch.allclose(model(x, sigma), gaussian, atol=1e-6)
    with torch.no_grad():
        model.output_scale.fill_(1.0)
        one = model(x, sigma) - gaussian
        model.output_scale.fill_(2.0)
        two = model(x, sigma) - gaussian
    assert torch.allclose(two, 2 * one, atol=1e-5)
    assert torch.equal(model(x, -sigma), model(x, sigma))  # the sign of sigma (AR-DAE draws both) is irrelevant


def test_every_convolution_is_spectrally_normalised_to_its_gain():
    model = _trained_a_little(ScoreNet(**TINY, lipschitz=2.0))
    convs = [m for m in model.modules() if isinstance(m, LipschitzConv)]
    assert len(convs) == 2 * 2 + 2 + 1  # two blocks down, one up, the head
    for conv in convs:
        weight = conv.gain * conv.conv.weight.detach()
        norm = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
        assert float(norm) == pytest.approx(2.0, rel=0.05)  # power iteration: one step per training forward


def test_baked_copy_computes_the_same_map():
    model = _trained_a_little(ScoreNet(**TINY))
    plain = model.without_parametrisation()
    assert not plain.spectral_norm and not any(isinstance(m, LipschitzConv) for m in plain.modules())
    x, sigma = _inputs(2, (16, 20), seed=2)
    with torch.no_grad():
        assert torch.allclose(plain(x, sigma), model(x, sigma), rtol=1e-5, atol=1e-6)


def test_scripts_and_exports_with_a_dynamic_batch():
    torch.manual_seed(0)
    model = _trained_a_little(ScoreNet(**TINY))
    example, other_batch = _inputs(2, (16, 16), seed=3), _inputs(3, (16, 16), seed=4)
    assert assert_exports(model, example, other_batch) == "script"
    assert model.spectral_norm  # scripting worked on a baked copy; the model keeps its parametrisation


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_filters": 0}, "n_filters"), ({"n_scales": 1.5}, "n_scales"), ({"lipschitz": 0.0}, "lipschitz"),
    ({"sigma_data": -1.0}, "sigma_data"),
])
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScoreNet(**kwargs)
