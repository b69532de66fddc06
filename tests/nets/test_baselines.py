import pytest
import torch

from mrdserve.models.nets.baselines import UNetBaseline, ZeroFilled
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters


def test_zero_filled_is_the_magnitude():
    torch.manual_seed(0)
    image = torch.randn(2, 7, 9, dtype=torch.complex64)
    out = ZeroFilled()(torch.view_as_real(image))
    assert out.shape == (2, 7, 9)
    assert torch.allclose(out, image.abs(), atol=1e-6)
    assert not list(ZeroFilled().parameters())


@pytest.mark.parametrize("shape", [(16, 16), (13, 11)])
def test_unet_baseline_shapes(shape):
    torch.manual_seed(0)
    assert UNetBaseline()(torch.randn(2, *shape, 2)).shape == (2, *shape)


def test_unet_baseline_parameters_and_residual():
    baseline = UNetBaseline()
    assert sum(p.numel() for p in baseline.parameters()) == 481_950  # 16 base filters, 4 levels
    last = baseline.unet.head[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.randn(1, 9, 8, 2)
    assert torch.allclose(baseline(x), ZeroFilled()(x), atol=1e-6)  # residual: zero net = zero-filled


def test_unet_baseline_3d():
    torch.manual_seed(0)
    assert UNetBaseline([4, 8], dim=3)(torch.randn(2, 5, 6, 7, 2)).shape == (2, 5, 6, 7)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    assert_gradients_reach_all_parameters(UNetBaseline([4, 8, 16, 32]), (torch.randn(2, 16, 16, 2),))


@pytest.mark.parametrize("model", [ZeroFilled(), UNetBaseline([4, 8])])
def test_scripts_and_exports_to_onnx(model):
    torch.manual_seed(0)
    assert assert_exports(model, (torch.randn(2, 13, 10, 2),), (torch.randn(3, 13, 10, 2),)) == "script"
