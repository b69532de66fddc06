import pytest
import torch

from mrdserve.models.nets.mwcnn import MWCNN, PRESETS, haar_dwt, haar_iwt
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters


def _tiny(residual: bool = True) -> MWCNN:
    return MWCNN(12, 10, filters=[8, 16], n_convs=1, residual=residual, first_filters=8, n_first_convs=2)


def _expected_count(
    in_c: int, out_c: int, filters: list[int], n_convs: int, first_filters: int, n_first_convs: int
) -> int:
    """Weights of the conv-ReLU blocks (no bias) plus the biased last conv, counted by hand."""
    n, first, n_first = n_convs, first_filters, n_first_convs
    finer = [first, *filters[:-1]]
    head = 9 * (in_c * first + (n_first - 1) * first * first)
    down = sum(9 * (4 * finer[i] * f + (n - 1) * f * f) for i, f in enumerate(filters))
    up = sum(9 * ((n - 1) * f * f + f * 4 * finer[i]) for i, f in enumerate(filters))
    tail = 9 * ((n_first - 1) * first * first + first * out_c) + out_c
    return head + down + up + tail


def test_haar_transforms_invert_each_other_and_keep_energy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 6, generator=g, dtype=torch.float64)
    coefficients = haar_dwt(x)
    assert coefficients.shape == (2, 12, 4, 3)
    assert torch.allclose(haar_iwt(coefficients), x, atol=1e-6)
    assert torch.allclose(haar_dwt(haar_iwt(coefficients)), coefficients, atol=1e-6)
    assert torch.allclose(coefficients.square().sum(), x.square().sum())  # orthonormal
    constant = haar_dwt(torch.ones(1, 1, 2, 2))
    assert torch.allclose(constant.flatten(), torch.tensor([2.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize(("name", "count"), [("small", 338_122), ("medium", 6_217_930), ("big", 24_932_746)])
def test_preset_parameter_counts(name, count):
    model = MWCNN.from_preset(name, 12, 10)  # XPDNet image net: buffer 5 + gradient 1 complex -> buffer 5
    assert sum(p.numel() for p in model.parameters()) == count
    assert _expected_count(12, 10, **PRESETS[name]) == count


@pytest.mark.parametrize("shape", [(16, 12), (13, 9), (1, 1)])
def test_forward_shapes_even_and_odd(shape):
    torch.manual_seed(0)
    x = torch.randn(3, 12, *shape)
    assert _tiny()(x).shape == (3, 10, *shape)


def test_residual_adds_the_leading_complex_channels():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 9, 7)
    with_residual, without = _tiny(True), _tiny(False)
    without.load_state_dict(with_residual.state_dict())
    buffer = torch.cat([x[:, 0:5], x[:, 6:11]], dim=1)  # real parts 0..4, imaginary parts 0..4
    assert torch.allclose(with_residual(x) - without(x), buffer, atol=1e-6)


def test_batch_items_are_independent():
    torch.manual_seed(0)
    model, x = _tiny(), torch.randn(3, 12, 11, 10)
    assert torch.allclose(model(x)[1:2], model(x[1:2]), atol=1e-5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    assert_gradients_reach_all_parameters(_tiny(), (torch.randn(2, 12, 10, 9),))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="preset"):
        MWCNN.from_preset("huge", 12, 10)
    with pytest.raises(ValueError, match="in_channels"):
        MWCNN(3, 2)


def test_scripts_and_exports_to_onnx_with_dynamic_batch_and_spatial_axes():
    torch.manual_seed(0)
    others = [(torch.randn(1, 12, 20, 16),), (torch.randn(2, 12, 9, 7),)]  # padded to 20x16 and 12x8 inside
    how = assert_exports(_tiny(), (torch.randn(2, 12, 13, 10),), (torch.randn(3, 12, 13, 10),),
                         dynamic_dims=[(2, 3)], other_size_inputs=others)
    assert how == "script"
