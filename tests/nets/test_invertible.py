from __future__ import annotations

import pytest
import torch

from mrdserve.models.nets.invertible import (
    DownsamplingResidualBlock,
    Householder1x1,
    InvertibleLayer,
    invertible_sequence,
    sequence_forward,
    sequence_inverse,
)


def test_householder_1x1_is_orthogonal_and_its_transpose_inverts_it():
    torch.manual_seed(0)
    conv = Householder1x1(8, n_reflections=3).double()
    u = conv.matrix()
    assert torch.allclose(u @ u.t(), torch.eye(8, dtype=torch.float64), atol=1e-12)
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    assert torch.allclose(conv(conv(x), transpose=True), x, atol=1e-12)
    assert torch.allclose(conv(x).norm(), x.norm())


@pytest.mark.parametrize("factor", [1, 2, 4])
@pytest.mark.parametrize("shape", [(16, 12), (15, 13)])
def test_residual_block_keeps_the_spatial_size(factor, shape):
    block = DownsamplingResidualBlock(3, 5, 8, factor)
    assert block(torch.randn(2, 3, *shape)).shape == (2, 5, *shape)


@pytest.mark.parametrize("n_channels", [6, 7])
def test_invertible_layer_inverse_reconstructs_its_input(n_channels):
    torch.manual_seed(0)
    layer = InvertibleLayer(n_channels, hidden=8, factor=2)
    x = torch.randn(2, n_channels, 15, 12)
    y = layer(x, [])
    assert not torch.allclose(y, x, atol=1e-3)
    assert (layer.inverse(y, []) - x).abs().max() < 1e-5


def _layers(n: int = 4) -> list[InvertibleLayer]:
    torch.manual_seed(1)
    return [InvertibleLayer(6, hidden=8, factor=1 + i % 2).double() for i in range(n)]


def test_sequence_inverse_reconstructs_the_input():
    layers = _layers()
    x = torch.randn(2, 6, 9, 10, dtype=torch.float64)
    assert (sequence_inverse(layers, sequence_forward(layers, x, []), []) - x).abs().max() < 1e-10


def test_invertible_backprop_gradients_equal_ordinary_backprop_in_float64():
    layers = _layers()
    params = [p for layer in layers for p in layer.parameters()]
    torch.manual_seed(2)
    x0 = torch.randn(2, 6, 9, 10, dtype=torch.float64)
    weights = torch.randn(2, 6, 9, 10, dtype=torch.float64)

    def gradients(run):
        x = x0.clone().requires_grad_(True)
        for p in params:
            p.grad = None
        out = run(layers, x, [])
        assert torch.allclose(out, sequence_forward(layers, x0, []).detach())
        (weights * out).sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for p in params]

    for ordinary, invertible in zip(gradients(sequence_forward), gradients(invertible_sequence), strict=True):
        assert (ordinary - invertible).norm() / ordinary.norm() < 1e-4
