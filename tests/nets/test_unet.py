import pytest
import torch

from mrdserve.models.nets.unet import UNet
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters


@pytest.mark.parametrize("shape", [(16, 16), (13, 11), (3, 5)])
def test_forward_shapes_2d(shape):
    torch.manual_seed(0)
    model = UNet(4, 3, filters=[4, 8, 16])
    assert model(torch.randn(2, 4, *shape)).shape == (2, 3, *shape)


def test_forward_shapes_3d_and_average_pooling():
    torch.manual_seed(0)
    model = UNet(2, 2, filters=[4, 8], dim=3, pool="avg", residual=True)
    assert model(torch.randn(2, 2, 5, 6, 7)).shape == (2, 2, 5, 6, 7)


def test_parameter_count_of_the_reference_design():
    # levels [16, 32, 64, 128], 2 convs, 2 -> 2 channels: the U-Net baseline of the thesis
    assert sum(p.numel() for p in UNet(2, 2).parameters()) == 481_950


def test_residual_and_leaky_relu():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 10)
    with_residual = UNet(6, 4, [4, 8], activation="leaky_relu", residual=True)
    without = UNet(6, 4, [4, 8], activation="leaky_relu", residual=False)
    without.load_state_dict(with_residual.state_dict())
    leading = torch.cat([x[:, 0:2], x[:, 3:5]], dim=1)
    assert torch.allclose(with_residual(x) - without(x), leading, atol=1e-6)


@pytest.mark.parametrize("dim", [2, 3])
def test_gradients_reach_every_parameter(dim):
    torch.manual_seed(0)
    model = UNet(2, 2, [4, 8, 16] if dim == 2 else [4, 8], activation="leaky_relu", dim=dim)
    x = torch.randn(2, 2, *([12, 10] if dim == 2 else [6, 5, 4]))
    assert_gradients_reach_all_parameters(model, (x,))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="activation"):
        UNet(2, 2, activation="gelu")
    with pytest.raises(ValueError, match="dim"):
        UNet(2, 2, dim=1)
    with pytest.raises(ValueError, match="out_channels"):
        UNet(2, 3, residual=True)


@pytest.mark.parametrize("dim", [2, 3])
def test_scripts_and_exports_to_onnx(dim):
    torch.manual_seed(0)
    model = UNet(2, 2, [4, 8], activation="leaky_relu", residual=True, dim=dim)
    shape = [11, 10] if dim == 2 else [5, 6, 3]
    assert assert_exports(model, (torch.randn(2, 2, *shape),), (torch.randn(3, 2, *shape),)) == "script"
