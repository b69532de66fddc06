import pytest
import torch

from mrdserve.models.data.coils import coil_sensitivities_2d
from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.nets.ncpdnet import NCPDNet, ncpdnet_3d
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.prepare_noncartesian import prepare_noncartesian, to_network_inputs
from mrdserve.models.physics.toeplitz import toeplitz_apply
from mrdserve.models.physics.trajectories import radial_2d, spiral_2d
from tests.nets.export_check import assert_exports

SHAPE = (32, 32)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _random_inputs(batch: int, shape: tuple[int, ...], coils: int = 0, per_sample: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    adjoint = torch.randn(batch, *(coils,) * bool(coils), *shape, 2, generator=g)
    kernel_shape = (batch,) * per_sample + tuple(2 * n for n in shape) + (2,)
    kernel = torch.randn(*kernel_shape, generator=g)
    if not coils:
        return adjoint, kernel
    return adjoint, kernel, torch.randn(batch, coils, *shape, 2, generator=g)


def test_parameter_counts_match_the_reference_design():
    assert _count(NCPDNet()) == 156_260  # 10 x (12*32*9+32 + 32*32*9+32 + 32*10*9+10)
    assert _count(NCPDNet(multicoil=True)) == 156_260
    assert _count(NCPDNet(multicoil=True, refine_sensitivities=True)) == 163_718  # + small refiner (7,458)
    assert _count(ncpdnet_3d()) == 67_608  # 6 x (6*16*27+16 + 16*16*27+16 + 16*4*27+4)


@pytest.mark.parametrize("shape", [(7, 9), (8, 8)])
@pytest.mark.parametrize("coils", [0, 3])
def test_forward_shapes_2d_and_shared_kernel_equals_per_sample(shape, coils):
    torch.manual_seed(0)
    net = NCPDNet(n_iter=2, n_primal=3, n_filters=8, multicoil=bool(coils)).eval()
    inputs = _random_inputs(2, shape, coils)
    out = net(*inputs)
    assert out.shape == (2, *shape) and bool((out >= 0).all())
    per_sample = list(inputs)
    per_sample[1] = inputs[1].unsqueeze(0).expand(2, *inputs[1].shape)
    assert torch.allclose(net(*per_sample), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("coils", [0, 2])
def test_forward_shapes_3d(coils):
    torch.manual_seed(0)
    net = ncpdnet_3d(multicoil=bool(coils), n_iter=2, n_filters=4)
    out = net(*_random_inputs(3, (4, 5, 6), coils))
    assert out.shape == (3, 4, 5, 6)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = NCPDNet(n_iter=2, n_primal=2, n_filters=4, multicoil=True, refine_sensitivities=True)
    net(*_random_inputs(2, (8, 8), coils=2)).square().mean().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), name


def test_real_arithmetic_normal_operator_matches_physics_toeplitz():
    g = torch.Generator().manual_seed(1)
    image = torch.randn(2, 6, 7, dtype=torch.complex64, generator=g)
    kernel = torch.randn(12, 14, dtype=torch.complex64, generator=g)
    smaps = torch.randn(2, 3, 6, 7, dtype=torch.complex64, generator=g)
    net = NCPDNet(n_iter=1, multicoil=True)
    re, im = net._normal(image.real, image.imag, torch.view_as_real(kernel), torch.view_as_real(smaps))
    expected = (smaps.conj() * toeplitz_apply(smaps * image.unsqueeze(1), kernel)).sum(1)
    assert torch.allclose(torch.complex(re, im), expected, atol=1e-4)


@pytest.mark.parametrize("trajectory", [radial_2d(16, 64), spiral_2d(4, 512, matrix=32)], ids=["radial", "spiral"])
@pytest.mark.parametrize(("coils", "refine"), [(0, False), (4, False), (4, True)],
                         ids=["single", "multicoil", "refined"])
def test_toeplitz_form_equals_nufft_per_iteration_form(trajectory, coils, refine):
    torch.manual_seed(0)
    image = torch.stack([complex_phantom_2d(SHAPE, seed=s) for s in (0, 1)])
    smaps = coil_sensitivities_2d(coils, SHAPE, seed=0).to(torch.complex64) if coils else None
    batch_smaps = None if smaps is None else smaps.unsqueeze(0).expand(2, -1, -1, -1)
    data = NufftOp(trajectory, SHAPE, smaps=batch_smaps).forward(image)
    inputs = prepare_noncartesian(data, trajectory, SHAPE, smaps=smaps)
    net = NCPDNet(n_iter=3, multicoil=bool(coils), refine_sensitivities=refine)
    op = NufftOp(trajectory, SHAPE, smaps=inputs.smaps, density=inputs.density, backend="finufft")
    with torch.no_grad():
        toeplitz = net(*to_network_inputs(inputs))
        reference = net.forward_nufft(inputs.data, op)
        if refine:  # the refiner really changes the maps, so the data term must use the refined ones
            refined = torch.view_as_complex(net.refiner(torch.view_as_real(inputs.smaps)).contiguous())
            assert float((refined - inputs.smaps).norm() / inputs.smaps.norm()) > 1e-2
    assert float((toeplitz - reference).norm() / reference.norm()) < 1e-3
    # the unrolled network did change the adjoint (the comparison is not trivial)
    assert float((toeplitz - inputs.combined_adjoint.abs()).norm() / toeplitz.norm()) > 1e-3


def test_multicoil_combines_the_per_coil_adjoint_with_its_maps():
    torch.manual_seed(0)
    adjoint, kernel, smaps = _random_inputs(2, (6, 6), coils=3)
    net = NCPDNet(n_iter=1, n_primal=2, n_filters=4, multicoil=True).eval()
    combined = (torch.view_as_complex(smaps).conj() * torch.view_as_complex(adjoint)).sum(1)
    single = NCPDNet(n_iter=1, n_primal=2, n_filters=4).eval()
    single.load_state_dict(net.state_dict())
    # with one coil of ones the normal operator is the same, so only the data term's combination differs
    ones = torch.view_as_real(torch.ones(2, 1, 6, 6, dtype=torch.complex64))
    with torch.no_grad():
        expected = single(torch.view_as_real(combined), kernel)
        got = net(torch.view_as_real(combined).unsqueeze(1), kernel, ones)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="per-coil"):
        net(torch.view_as_real(combined), kernel, smaps)


@pytest.mark.slow
@pytest.mark.parametrize("coils", [0, 2])
def test_scripts_and_exports_to_onnx_2d(coils):
    torch.manual_seed(0)
    net = NCPDNet(n_iter=2, n_primal=3, n_filters=8, multicoil=bool(coils), refine_sensitivities=bool(coils))
    example = _random_inputs(2, (8, 7), coils, per_sample=True, seed=0)
    other = _random_inputs(3, (8, 7), coils, per_sample=True, seed=1)
    assert assert_exports(net, example, other, rtol=1e-4) == "script"


@pytest.mark.slow
def test_scripts_and_exports_to_onnx_3d():
    torch.manual_seed(0)
    net = ncpdnet_3d(n_iter=2, n_filters=4)
    example = _random_inputs(2, (4, 5, 6), per_sample=True, seed=0)
    other = _random_inputs(1, (4, 5, 6), per_sample=True, seed=1)
    assert assert_exports(net, example, other, rtol=1e-4) == "script"


def test_shared_kernel_form_scripts():
    net = NCPDNet(n_iter=1, n_primal=2, n_filters=4, multicoil=True).eval()
    inputs = _random_inputs(2, (6, 6), coils=2)
    scripted = torch.jit.script(net)
    assert torch.allclose(scripted(*inputs), net(*inputs), rtol=1e-5, atol=1e-6)


def test_rejects_inputs_of_the_wrong_form():
    net = NCPDNet(n_iter=1, multicoil=True)
    adjoint, kernel, smaps = _random_inputs(1, (6, 6), coils=2)
    with pytest.raises(ValueError, match="smaps"):
        net(adjoint, kernel)
    with pytest.raises(ValueError, match="kernel"):
        net(adjoint, kernel[..., 0], smaps)
    with pytest.raises(ValueError, match="adjoint"):
        net(adjoint[0], kernel, smaps)
    with pytest.raises(ValueError, match="smaps"):
        NCPDNet(n_iter=1)(adjoint, kernel, smaps)
    with pytest.raises(ValueError, match="refine_sensitivities"):
        NCPDNet(refine_sensitivities=True)
    with pytest.raises(ValueError, match="n_iter"):
        NCPDNet(n_iter=0)


@pytest.mark.slow
def test_tiny_ncpdnet_overfits_one_radial_example():
    torch.manual_seed(0)
    trajectory = radial_2d(16, 64)
    image = complex_phantom_2d(SHAPE, seed=0)[None]
    inputs = prepare_noncartesian(NufftOp(trajectory, SHAPE).forward(image), trajectory, SHAPE)
    network_inputs = to_network_inputs(inputs)
    target = image.abs() / inputs.scale.reshape(-1, 1, 1)
    net = NCPDNet(n_iter=2, n_primal=2, n_filters=16)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(net(*network_inputs), target)
        losses.append(loss.item())
        if losses[-1] < losses[0] / 10:
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert losses[-1] < losses[0] / 10, f"loss went from {losses[0]:.3g} to {losses[-1]:.3g}"
