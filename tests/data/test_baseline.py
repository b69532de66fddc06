"""Classical baseline per task on small simulations: PSNR/SSIM against the stored ground truth.

64x64 (Cartesian 96x96), 6 coils, noise 0.005. Images are compared after least-squares scaling (the
baseline's scale is not calibrated). Bounds sit a few dB under the measured values (in comments) and state
the margins by which CG-SENSE must beat the plain (density-compensated) adjoint when undersampled.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mrdserve.models.data.baseline import AUTO_ACCELERATED, classical_reconstruction
from mrdserve.models.data.coils import coil_sensitivities_2d
from mrdserve.models.data.ismrmrd_io import read_ismrmrd
from mrdserve.models.data.metrics import psnr, ssim
from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.simulate import read_ground_truth, simulate_to_file
from mrdserve.models.physics.density import pipe_menon_density
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.trajectories import spiral_2d

N = 64
CARTESIAN_N = 96


def _scores(truth: torch.Tensor, image: torch.Tensor) -> tuple[float, float]:
    """PSNR and SSIM of ``image`` scaled by least squares onto ``truth`` (both magnitudes)."""
    truth, image = truth.abs().double(), image.abs().double()
    scaled = image * (truth * image).sum() / image.square().sum()
    return psnr(truth, scaled), ssim(truth, scaled)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """(sample, ground-truth magnitude) per (trajectory, acceleration), written and read back as ISMRMRD."""
    folder: Path = tmp_path_factory.mktemp("baseline")
    cases = {}
    for trajectory in ("cartesian", "radial", "spiral"):
        for acceleration in (1, 4):
            if trajectory == "spiral" and acceleration == 4:
                continue  # built below with the variable-density spiral
            path = folder / f"{trajectory}_{acceleration}.h5"
            matrix = CARTESIAN_N if trajectory == "cartesian" else N  # 96: 8 ACS lines at 8%
            simulate_to_file(path, trajectory=trajectory, coils=6, acceleration=acceleration, matrix=matrix,
                             noise=0.005, seed=3, noise_scan=False)
            _, samples = read_ismrmrd(path)
            cases[trajectory, acceleration] = (samples[0], read_ground_truth(path)[0].abs())
    cases["spiral", 4] = _variable_density_spiral_sample()
    return cases


def _variable_density_spiral_sample() -> tuple[KSpaceSample, torch.Tensor]:
    """R=4 spiral (2 of the 8 interleaves that are Nyquist at 64) with a Nyquist-sampled centre."""
    image = complex_phantom_2d((N, N), seed=3)[None]
    smaps = coil_sensitivities_2d(6, (N, N), seed=4)[None]
    trajectory = spiral_2d(2, 1300, matrix=N, undersampling=4.0)
    data = NufftOp(trajectory, (N, N)).forward_coils(smaps * image[:, None])[0]
    generator = torch.Generator().manual_seed(5)
    data = data + 0.005 * torch.randn(data.shape, dtype=data.dtype, generator=generator)
    sample = KSpaceSample(kspace=data, matrix=(N, N), recon_matrix=(N, N), trajectory_type="spiral",
                          trajectory=trajectory)
    return sample, image[0].abs()


def _run(simulated: dict, trajectory: str, acceleration: int, method: str) -> tuple[float, float]:
    sample, truth = simulated[trajectory, acceleration]
    result = classical_reconstruction(sample, method=method)
    assert result.image.shape == truth.shape and not result.image.is_complex()
    return _scores(truth, result.image)


# (trajectory, R): minimum PSNR (dB) and SSIM of the auto method, and the dB by which CG-SENSE must beat the
# adjoint (None: fully sampled, auto is the adjoint or CG-SENSE merely has to match it). Measured values in
# the comments; bounds sit ~2 dB / 0.05 under them.
EXPECTED = {
    ("cartesian", 1): (39.0, 0.83, None),  # rss 41.0 / 0.887
    ("radial", 1): (31.0, 0.84, None),  # cg-sense 33.2 / 0.892, adjoint 32.9
    ("radial", 4): (23.5, 0.73, 4.0),  # cg-sense 25.8 / 0.782, adjoint 19.7
    ("spiral", 1): (30.0, 0.81, 6.0),  # cg-sense 32.2 / 0.866, adjoint 23.4
    ("spiral", 4): (21.0, 0.66, 4.0),  # variable density: cg-sense 23.4 / 0.717, adjoint 16.7
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_baseline_quality(simulated: dict, case: tuple[str, int]) -> None:
    min_psnr, min_ssim, margin = EXPECTED[case]
    sample, truth = simulated[case]
    result = classical_reconstruction(sample)
    assert result.method == ("rss" if case[0] == "cartesian" else AUTO_ACCELERATED)
    auto_psnr, auto_ssim = _scores(truth, result.image)
    assert auto_psnr > min_psnr and auto_ssim > min_ssim
    adjoint_psnr, _ = _run(simulated, *case, "adjoint")
    if margin is not None:
        assert auto_psnr > adjoint_psnr + margin
    else:
        assert auto_psnr > adjoint_psnr - 0.5


def test_cartesian_r4_cg_sense_beats_zero_filled(simulated: dict) -> None:
    sense_psnr, sense_ssim = _run(simulated, "cartesian", 4, "cg-sense")
    zero_filled_psnr, zero_filled_ssim = _run(simulated, "cartesian", 4, "rss")
    assert classical_reconstruction(simulated["cartesian", 4][0]).method == AUTO_ACCELERATED
    assert sense_psnr > zero_filled_psnr + 3.0 and sense_ssim > zero_filled_ssim + 0.1


def test_own_density_weights_are_normalised(simulated: dict) -> None:
    """An acquisition's weights in another scale (here 1000x Pipe-Menon) give the same images."""
    sample, truth = simulated["radial", 4]
    reference = classical_reconstruction(sample, method="adjoint").image
    weights = 1000.0 * pipe_menon_density(sample.trajectory, sample.matrix)
    scaled = KSpaceSample(kspace=sample.kspace, matrix=sample.matrix, recon_matrix=sample.recon_matrix,
                          trajectory_type=sample.trajectory_type, trajectory=sample.trajectory, density=weights)
    assert torch.allclose(classical_reconstruction(scaled, method="adjoint").image, reference,
                          rtol=1e-3, atol=1e-3 * float(reference.max()))
    sense = classical_reconstruction(scaled, method="cg-sense").image
    assert math.isclose(_scores(truth, sense)[0], _run(simulated, "radial", 4, "cg-sense")[0], abs_tol=0.1)
