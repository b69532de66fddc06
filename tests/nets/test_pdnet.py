from __future__ import annotations

import pytest
import torch
from torch import nn

from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.nets.pdnet import PDNet
from mrdserve.models.physics.fft import fft2c, ifft2c
from mrdserve.models.physics.masks import EquispacedFractionMask
from mrdserve.models.physics.prepare_cartesian import prepare_cartesian
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters


def _random_inputs(batch: int, shape: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lines = torch.rand(batch, 1, shape[0], 1, generator=g) < 0.4
    mask = lines.expand(batch, 1, *shape).float()
    return torch.randn(batch, 1, *shape, 2, generator=g) * mask[..., None], mask


def test_parameter_count_of_the_benchmark_configuration():
    # per iteration: dual CNN 14 -> 32 -> 32 -> 10 (16,202) + primal CNN 12 -> 32 -> 32 -> 10 (15,626)
    assert sum(p.numel() for p in PDNet().parameters()) == 318_280


@pytest.mark.parametrize("shape", [(16, 12), (15, 13)])
def test_forward_shape_odd_and_even_with_and_without_coil_dimension(shape):
    model = PDNet(n_iter=2)
    kspace, mask = _random_inputs(3, shape)
    out = model(kspace, mask)
    assert out.shape == (3, *shape) and bool((out >= 0).all())
    assert torch.equal(model(kspace[:, 0], mask), out)


def test_zero_nets_return_the_zero_filled_image():
    image = complex_phantom_2d((24, 20), seed=0)
    mask = EquispacedFractionMask([0.2], [4])(24, seed=0).kspace_mask()
    prepared = prepare_cartesian(fft2c(image).unsqueeze(0), mask)
    model = PDNet(n_iter=2)
    for parameter in model.parameters():
        nn.init.zeros_(parameter)
    expected = ifft2c(prepared.kspace[:, 0]).abs()
    assert torch.allclose(model(*prepared.to_network_inputs(with_smaps=False)), expected, atol=1e-6)


def test_gradients_reach_every_parameter():
    assert_gradients_reach_all_parameters(PDNet(n_iter=2), _random_inputs(2, (12, 10)))


def test_scripts_and_exports_to_onnx_with_another_batch_size():
    model = PDNet(n_iter=2)
    assert assert_exports(model, _random_inputs(2, (16, 12), 1), _random_inputs(3, (16, 12), 2)) == "script"


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_iter"):
        PDNet(n_iter=0)
