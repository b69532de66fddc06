import pytest
import torch

from mrdserve.models.data.coils import coil_sensitivities_2d
from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.physics.density import pipe_menon_density
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.prepare_noncartesian import NonCartesianInputs, prepare_noncartesian, to_network_inputs
from mrdserve.models.physics.trajectories import radial_2d

SHAPE = (24, 20)


@pytest.fixture(scope="module")
def problem():
    trajectory = radial_2d(12, 32)
    density = pipe_menon_density(trajectory, SHAPE)
    image = torch.stack([complex_phantom_2d(SHAPE, seed=s) for s in (0, 1)]) * 7.0
    smaps = coil_sensitivities_2d(3, SHAPE, seed=0).to(torch.complex64)
    data_sc = NufftOp(trajectory, SHAPE).forward(image)
    data_mc = NufftOp(trajectory, SHAPE, smaps=smaps.unsqueeze(0).expand(2, -1, -1, -1)).forward(image)
    return trajectory, density, smaps, data_sc, data_mc


def test_single_coil_adjoint_kernel_and_scale(problem):
    trajectory, density, _, data, _ = problem
    inputs = prepare_noncartesian(data, trajectory, SHAPE, density=density)
    assert isinstance(inputs, NonCartesianInputs) and not inputs.multicoil
    op = NufftOp(trajectory, SHAPE, density=density)
    raw = op.weighted_adjoint(data)
    assert inputs.scale.shape == (2,) and bool((inputs.scale > 0).all())
    expected = raw / inputs.scale.reshape(-1, 1, 1)
    assert torch.allclose(inputs.adjoint, expected, rtol=1e-5, atol=1e-6)
    # the scale is a robust max: the scaled adjoint is O(1)
    peak = inputs.adjoint.abs().reshape(2, -1).amax(1)
    assert bool(((peak > 0.9) & (peak < 3.0)).all())
    assert torch.allclose(inputs.adjoint * inputs.scale.reshape(-1, 1, 1), raw, rtol=1e-5, atol=1e-5)
    assert torch.allclose(inputs.data * inputs.scale.reshape(-1, 1, 1), data, rtol=1e-5, atol=1e-6)
    kernel = op.toeplitz_kernel(weighted=True)
    assert inputs.kernel.shape == (48, 40) and torch.allclose(inputs.kernel, kernel)


def test_unbatched_data_and_default_density(problem):
    trajectory, density, _, data, _ = problem
    inputs = prepare_noncartesian(data[0], trajectory, SHAPE)
    assert inputs.adjoint.shape == (1, *SHAPE)
    assert torch.allclose(inputs.density, density)


def test_multicoil_with_given_and_estimated_sensitivities(problem):
    trajectory, density, smaps, _, data = problem
    inputs = prepare_noncartesian(data, trajectory, SHAPE, density=density, smaps=smaps)
    assert inputs.multicoil and inputs.smaps.shape == (2, 3, *SHAPE)
    batch_smaps = smaps.unsqueeze(0).expand(2, -1, -1, -1)
    op = NufftOp(trajectory, SHAPE, smaps=batch_smaps, density=density)
    expected = op.weighted_adjoint(data) / inputs.scale.reshape(-1, 1, 1)
    assert torch.allclose(inputs.combined_adjoint, expected, rtol=1e-5, atol=1e-6)
    # the network input is the per-coil adjoint A_c^H D y_c, not combined (the net combines with its maps)
    per_coil = op.adjoint_coils(data * density) / inputs.scale.reshape(-1, 1, 1, 1)
    assert inputs.adjoint.shape == (2, 3, *SHAPE)
    assert torch.allclose(inputs.adjoint, per_coil, rtol=1e-5, atol=1e-6)
    peak = inputs.combined_adjoint.abs().reshape(2, -1).amax(1)
    assert bool(((peak > 0.9) & (peak < 3.0)).all())
    estimated = prepare_noncartesian(data, trajectory, SHAPE, density=density, smaps="estimate")
    assert estimated.smaps.shape == (2, 3, *SHAPE)
    rss = estimated.smaps.abs().square().sum(1).sqrt()
    assert torch.allclose(rss[:, 8:16, 6:14], torch.ones(2, 8, 8), atol=1e-3)


def test_network_inputs_are_real_in_forward_order(problem):
    trajectory, density, smaps, _, data = problem
    inputs = prepare_noncartesian(data, trajectory, SHAPE, density=density, smaps=smaps)
    adjoint, kernel, maps = to_network_inputs(inputs)
    assert adjoint.shape == (2, 3, *SHAPE, 2) and kernel.shape == (48, 40, 2) and maps.shape == (2, 3, *SHAPE, 2)
    assert not any(t.is_complex() for t in (adjoint, kernel, maps))
    assert torch.equal(torch.view_as_complex(adjoint), inputs.adjoint)
    _, per_sample, _ = to_network_inputs(inputs, kernel_per_sample=True)
    assert per_sample.shape == (2, 48, 40, 2) and torch.equal(per_sample[1], kernel)
    single = prepare_noncartesian(problem[3], trajectory, SHAPE, density=density)
    assert len(to_network_inputs(single)) == 2 and to_network_inputs(single)[0].shape == (2, *SHAPE, 2)
    assert torch.equal(single.combined_adjoint, single.adjoint)


def test_errors_name_the_problem(problem):
    trajectory, density, smaps, data_sc, data_mc = problem
    with pytest.raises(TypeError, match="data"):
        prepare_noncartesian(data_sc.real, trajectory, SHAPE, density=density)
    with pytest.raises(ValueError, match="data must be"):
        prepare_noncartesian(data_sc.reshape(1, 2, 1, -1), trajectory, SHAPE, density=density)
    with pytest.raises(ValueError, match="samples"):
        prepare_noncartesian(data_sc[..., :-1], trajectory, SHAPE, density=density)
    with pytest.raises(ValueError, match="rows"):
        prepare_noncartesian(data_sc, trajectory, (4, 4, 4), density=density)
    with pytest.raises(ValueError, match="smaps"):
        prepare_noncartesian(data_mc, trajectory, SHAPE, density=density)
    with pytest.raises(ValueError, match="smaps"):
        prepare_noncartesian(data_mc, trajectory, SHAPE, density=density, smaps=smaps[:2])
    with pytest.raises(ValueError, match="smaps"):
        prepare_noncartesian(data_mc, trajectory, SHAPE, density=density, smaps="espirit")
    with pytest.raises(ValueError, match="density"):
        prepare_noncartesian(data_sc, trajectory, SHAPE, density=density[:-1])
    with pytest.raises(ValueError, match="scale_quantile"):
        prepare_noncartesian(data_sc, trajectory, SHAPE, density=density, scale_quantile=0.0)
