from __future__ import annotations

import pytest
import torch
from torch import nn

from mrdserve.models.data.coils import coil_sensitivities_2d
from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.nets.mwcnn import MWCNN
from mrdserve.models.nets.xpdnet import XPDNet
from mrdserve.models.physics.classical import cartesian_cg_sense
from mrdserve.models.physics.kernels import sense_cg, sense_expand, sense_fit_noise_variance, sense_gradient
from mrdserve.models.physics.masks import EquispacedFractionMask
from mrdserve.models.physics.noise_level import kspace_noise_variance
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


def test_warm_start_with_zero_image_nets_is_regularised_cg_sense():
    # zero image nets: the output is the warm start itself, CG-SENSE with l2 = factor * sigma^2 / mean|A^H y|^2
    prepared, _ = prepared_example()
    model = XPDNet(n_iter=2, image_net=_tiny_mwcnn, warm_start=12, warm_start_factor=2.0)
    for image_net in model.image_nets:
        for parameter in image_net.parameters():
            nn.init.zeros_(parameter)
    adjoint = sense_adjoint(prepared.kspace, prepared.smaps, prepared.mask)
    noise = kspace_noise_variance(prepared.kspace)
    l2 = max(2.0 * noise / float(adjoint.abs().square().mean()), 1e-6)
    expected = cartesian_cg_sense(prepared.kspace, prepared.mask, prepared.smaps, n_iter=12, l2=l2, tol=0.0).abs()
    assert torch.allclose(model(*prepared.to_network_inputs()), expected.reshape(1, *expected.shape[-2:]),
                          atol=1e-5)


def test_warm_start_unfolds_aliasing_the_adjoint_keeps():
    # the true maps; a small factor: at 32x32 the readout's edge has signal
    inputs = _phantom_inputs()[0]
    truth = complex_phantom_2d((32, 32), seed=1).reshape(1, 1, 32, 32)
    errors = {}
    for steps in (0, 30):
        model = XPDNet(n_iter=1, image_net=_tiny_mwcnn, warm_start=steps, warm_start_factor=1e-3)
        for parameter in model.image_nets.parameters():
            nn.init.zeros_(parameter)
        with torch.no_grad():
            image = model(*inputs)
        errors[steps] = float((image - truth.abs()[0]).norm() / truth.abs().norm())
    assert errors[30] < 0.1 < errors[0]


def _phantom_inputs(seed: int = 1) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noiseless 4-coil phantom data (10 of 32 lines) with unit root-sum-of-squares maps: network inputs, the
    complex k-space, the complex maps and the mask."""
    truth = complex_phantom_2d((32, 32), seed=seed).reshape(1, 1, 32, 32)
    maps = coil_sensitivities_2d(4, (32, 32), seed=seed).unsqueeze(0)
    smaps = maps / maps.abs().square().sum(dim=1, keepdim=True).sqrt()
    mask = EquispacedFractionMask([0.125], [3])(32, seed=0).kspace_mask().float().reshape(1, 1, 32, 1)
    mask = mask.expand(1, 1, 32, 32)
    kspace = sense_expand(truth, smaps, mask)
    inputs = (torch.stack([kspace.real, kspace.imag], dim=-1), mask, torch.stack([smaps.real, smaps.imag], dim=-1))
    return inputs, kspace, smaps, mask


@pytest.mark.parametrize(("noise", "factor"), [(0.0, 1.0), (0.05, 1e5)])
def test_final_dc_follows_clean_data_and_keeps_the_network_image_of_noisy_data(noise, factor):
    # zero image nets: x_net is the adjoint. Clean data fit the SENSE model (noise estimate ~0): the step moves
    # x_net to the data (by > 10%). Noisy data with a large factor: it leaves x_net (within 1%)
    inputs, kspace, smaps, mask = _phantom_inputs()
    g = torch.Generator().manual_seed(8)
    white = torch.complex(torch.randn(kspace.shape, generator=g), torch.randn(kspace.shape, generator=g))
    kspace = kspace + noise * white * mask
    inputs = (torch.stack([kspace.real, kspace.imag], dim=-1), *inputs[1:])
    images = {}
    for steps in (0, 20):
        model = XPDNet(n_iter=1, image_net=_tiny_mwcnn, final_dc=steps, final_dc_factor=factor)
        for parameter in model.image_nets.parameters():
            nn.init.zeros_(parameter)
        with torch.no_grad():
            images[steps] = model(*inputs)
    assert torch.allclose(images[0], sense_adjoint(kspace, smaps, mask).abs().reshape(1, 32, 32), atol=1e-6)
    change = float((images[20] - images[0]).norm() / images[0].norm())
    assert change < 0.01 if noise else change > 0.1


def test_final_dc_on_clean_data_reduces_the_data_residual_tenfold():
    inputs, kspace, smaps, mask = _phantom_inputs()
    model = XPDNet(n_iter=1, image_net=_tiny_mwcnn, final_dc=30, final_dc_factor=3.0)
    for parameter in model.image_nets.parameters():
        nn.init.zeros_(parameter)
    adjoint = sense_adjoint(kspace, smaps, mask).reshape(1, 1, 32, 32)
    noise = float(sense_fit_noise_variance(kspace, smaps, mask, 30))
    mu = max(3.0 * noise / float(adjoint.abs().square().mean()), 1e-6)
    dc = adjoint + sense_cg(-sense_gradient(adjoint, kspace, smaps, mask), smaps, mask,
                            torch.full((1, 1, 1, 1), mu), 30)
    before = float((sense_expand(adjoint, smaps, mask) - kspace).norm())
    after = float((sense_expand(dc, smaps, mask) - kspace).norm())
    assert after < before / 10
    with torch.no_grad():
        assert torch.allclose(model(*inputs), dc.abs().reshape(1, 32, 32), atol=1e-4)


def test_cg_factors_are_learned_and_plain_state_dicts_are_unchanged():
    assert not {"warm_start_log_factor", "final_dc_log_factor"} & set(XPDNet(n_iter=1).state_dict())
    model = XPDNet(n_iter=1, preset="small", warm_start=3, final_dc=2)
    assert {"warm_start_log_factor", "final_dc_log_factor"} <= set(dict(model.named_parameters()))
    assert_gradients_reach_all_parameters(model, random_inputs(2, 3, (16, 16)))
    with pytest.raises(ValueError, match="warm_start"):
        XPDNet(n_iter=1, warm_start=-1)
    with pytest.raises(ValueError, match="final_dc"):
        XPDNet(n_iter=1, final_dc=2, final_dc_factor=0.0)


def test_xpdnet_with_cg_steps_scripts_and_exports_to_onnx():
    torch.manual_seed(0)
    model = XPDNet(n_iter=1, n_primal=2, preset="small", warm_start=1, final_dc=1)  # each CG step costs export time
    example = random_inputs(2, 3, (16, 16), seed=1)
    other_batch = random_inputs(3, 3, (16, 16), seed=2)
    dynamic = [(1, 2, 3), (2, 3), (1, 2, 3)]
    assert assert_exports(model, example, other_batch, dynamic_dims=dynamic,
                          other_size_inputs=[random_inputs(1, 4, (20, 24), seed=3)]) == "script"
