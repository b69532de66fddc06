from __future__ import annotations

import pytest
import torch
from torch import nn

from mrdserve.models.nets.mwcnn import MWCNN
from mrdserve.models.nets.xpdnet import XPDNet
from mrdserve.models.physics.sense import sense_adjoint, sense_forward
from tests.nets.cartesian_inputs import fit_losses, prepared_example, random_inputs
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters


def _tiny_mwcnn(in_channels: int, out_channels: int) -> nn.Module:
    return MWCNN(in_channels, out_channels, filters=[16], n_convs=1, first_filters=16, n_first_convs=1,
                 residual=False)


class _GradientStep(nn.Module):
    """Image net that moves every buffer image by -step * gradient (the last complex input channel)."""

    def __init__(self, n_primal: int, step: float) -> None:
        super().__init__()
        self.n_primal = n_primal
        self.step = step

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n = features.shape[1] // 2
        real, imag = features[:, n - 1 : n], features[:, 2 * n - 1 :]
        return -self.step * torch.cat([real] * self.n_primal + [imag] * self.n_primal, dim=1)


@pytest.mark.parametrize("shape", [(16, 12), (15, 13)])
def test_forward_shape_odd_and_even(shape):
    model = XPDNet(n_iter=2, preset="small")
    out = model(*random_inputs(3, 4, shape))
    assert out.shape == (3, *shape) and out.dtype == torch.float32 and bool((out >= 0).all())


def test_gradient_step_nets_make_it_gradient_descent_on_the_sense_data_term():
    prepared, _ = prepared_example()
    kspace, mask, smaps = prepared.to_network_inputs()
    n_iter, step = 3, 0.5
    model = XPDNet(n_iter=n_iter, n_primal=2, image_net=lambda i, o: _GradientStep(o // 2, step))
    measured = prepared.kspace
    image = sense_adjoint(measured, prepared.smaps, mask)
    for _ in range(n_iter):
        residual = sense_forward(image, prepared.smaps, mask) - measured
        image = image - step * sense_adjoint(residual, prepared.smaps, mask)
    assert torch.allclose(model(kspace, mask, smaps), image.abs(), atol=1e-5)


def test_zero_image_nets_return_the_zero_filled_sense_image():
    prepared, _ = prepared_example()
    model = XPDNet(n_iter=2, image_net=_tiny_mwcnn)
    for parameter in model.parameters():
        nn.init.zeros_(parameter)
    expected = sense_adjoint(prepared.kspace, prepared.smaps, prepared.mask).abs()
    assert torch.allclose(model(*prepared.to_network_inputs()), expected, atol=1e-6)


def test_gradients_reach_every_parameter_including_the_refiner():
    model = XPDNet(n_iter=2, preset="small", refine_smaps=True)
    assert_gradients_reach_all_parameters(model, random_inputs(2, 3, (16, 16)))


@pytest.mark.parametrize(("preset", "n_iter", "refine", "expected"), [
    ("small", 10, False, 3_381_220),
    ("small", 25, False, 8_453_050),
    ("medium", 10, False, 62_179_300),
    ("medium", 25, False, 155_448_250),
    ("small", 10, True, 3_388_678),  # + 7,458 for the small sensitivity refiner
])
def test_parameter_counts(preset, n_iter, refine, expected):
    with torch.device("meta"):
        model = XPDNet(n_iter=n_iter, preset=preset, refine_smaps=refine)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_scripts_and_exports_to_onnx_with_dynamic_batch_coil_and_spatial_axes():
    # one iteration has every op (export is slow). Exported at 16x16 with 3 coils, the ONNX model must reproduce
    # eager at other batch, coil and matrix sizes, even and odd: fftshift as torch.roll with a symbolic shift did
    # not convert, and the MWCNN padding must stay expressible for torch.export.
    torch.manual_seed(0)
    model = XPDNet(n_iter=1, n_primal=2, preset="small", refine_smaps=True)
    example = random_inputs(2, 3, (16, 16), seed=1)
    other_batch = random_inputs(3, 3, (16, 16), seed=2)
    other_sizes = [random_inputs(1, 4, (20, 24), seed=3), random_inputs(2, 2, (17, 13), seed=4)]
    dynamic = [(1, 2, 3), (2, 3), (1, 2, 3)]  # kspace [B, C, ky, kx, 2], mask [B, 1, ky, kx], smaps
    assert assert_exports(model, example, other_batch, dynamic_dims=dynamic, other_size_inputs=other_sizes) == "script"


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_iter"):
        XPDNet(n_iter=0)


@pytest.mark.slow
def test_tiny_xpdnet_overfits_one_example():
    torch.manual_seed(0)
    prepared, target = prepared_example()  # target: the image in network units
    inputs = prepared.to_network_inputs()
    model = XPDNet(n_iter=2, image_net=_tiny_mwcnn)
    losses = fit_losses(model, inputs, target, steps=150, lr=1e-3)
    assert min(losses[-20:]) < losses[0] / 10
