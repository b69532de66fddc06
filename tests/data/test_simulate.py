"""Synthetic acquisitions: deterministic, as undersampled as asked, consistent with the ground truth, and
written to ISMRMRD files that read back to the simulated k-space."""

from __future__ import annotations

import argparse
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch

from mrdserve.models.data.ismrmrd_io import read_acquisitions, read_ismrmrd
from mrdserve.models.data.simulate import (
    add_simulate_arguments,
    read_ground_truth,
    remove_readout_oversampling,
    run_simulate,
    simulate_cartesian,
    simulate_cartesian_3d,
    simulate_noncartesian,
    simulate_to_file,
    write_simulation,
)
from mrdserve.models.physics.fft import ifft2c, ifftnc
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.prewhiten import noise_covariance


def _coil_combine(sim_kspace: torch.Tensor, smaps: torch.Tensor, n_readout: int) -> torch.Tensor:
    """SENSE-combined zero-filled image of Cartesian k-space ``[S, C, ky, kx_os]``."""
    coil_images = ifft2c(remove_readout_oversampling(sim_kspace, n_readout))
    return (smaps.conj() * coil_images).sum(1)


def test_cartesian_is_deterministic_by_seed() -> None:
    a = simulate_cartesian((32, 32), n_coils=4, acceleration=4, seed=3)
    b = simulate_cartesian((32, 32), n_coils=4, acceleration=4, seed=3)
    c = simulate_cartesian((32, 32), n_coils=4, acceleration=4, seed=4)
    assert torch.equal(a.kspace, b.kspace) and torch.equal(a.mask, b.mask) and torch.equal(a.noise, b.noise)
    assert not torch.allclose(a.kspace, c.kspace)


@pytest.mark.parametrize(("mask_type", "acceleration"), [("equispaced_fraction", 4), ("random", 4),
                                                          ("equispaced", 2)])
def test_cartesian_acceleration_and_layout(mask_type: str, acceleration: int) -> None:
    sim = simulate_cartesian((64, 48), n_coils=3, acceleration=acceleration, center_fraction=0.08,
                             mask_type=mask_type, n_slices=2, readout_oversampling=2, seed=1)
    assert sim.kspace.shape == (2, 3, 64, 96) and sim.kspace.dtype == torch.complex64
    assert sim.ground_truth.shape == (2, 64, 48) and sim.smaps.shape == (3, 64, 48)
    assert sim.mask.shape == (64,) and sim.acs.shape == (64,)
    assert int(sim.acs.sum()) == round(64 * 0.08) and bool((sim.mask | ~sim.acs).all())
    tolerance = 0.8 if mask_type == "random" else 0.35  # random masks hit R only on average
    assert abs(sim.achieved_acceleration - acceleration) < tolerance
    assert torch.all(sim.kspace[:, :, ~sim.mask] == 0)  # unsampled lines stay empty
    assert torch.all(sim.kspace[:, :, sim.mask].abs().amax(-1) > 0)


def test_fully_sampled_noiseless_zero_filled_recon_is_the_ground_truth() -> None:
    sim = simulate_cartesian((48, 40), n_coils=4, acceleration=1, noise_level=0.0, n_slices=2,
                             readout_oversampling=2, seed=0)
    assert bool(sim.mask.all()) and sim.noise is None
    torch.testing.assert_close(_coil_combine(sim.kspace, sim.smaps, 40), sim.ground_truth, atol=1e-5, rtol=0)
    # RSS of the coil images is the ground-truth magnitude (maps are RSS-normalised).
    coil_images = ifft2c(remove_readout_oversampling(sim.kspace, 40))
    torch.testing.assert_close(coil_images.abs().pow(2).sum(1).sqrt(), sim.ground_truth.abs(), atol=1e-5,
                               rtol=0)
    assert float(sim.ground_truth.abs().max()) <= 1.0 + 1e-6


def test_noise_level_and_noise_scan_match() -> None:
    sim = simulate_cartesian((64, 64), n_coils=4, acceleration=1, noise_level=0.05, seed=2)
    clean = simulate_cartesian((64, 64), n_coils=4, acceleration=1, noise_level=0.0, seed=2)
    noise = (sim.kspace - clean.kspace)[0].reshape(4, -1).to(torch.complex128)
    expected = sim.noise_covariance.to(torch.complex128)
    torch.testing.assert_close(noise_covariance(noise), expected, atol=0.05 * 0.05 * 0.1, rtol=0)
    torch.testing.assert_close(noise_covariance(sim.noise.to(torch.complex128)), expected,
                               atol=0.05 * 0.05 * 0.1, rtol=0)
    assert abs(float(torch.diagonal(expected).real.mean()) / 0.05**2 - 1.0) < 0.35  # gains in [0.7, 1.3]


@pytest.mark.parametrize("trajectory", ["radial", "spiral"])
def test_noncartesian_matches_the_nufft_of_the_ground_truth(trajectory: str) -> None:
    sim = simulate_noncartesian(trajectory, (32, 32), n_coils=3, acceleration=2, noise_level=0.0, seed=5)
    assert sim.trajectory.shape == (2, sim.kspace.shape[-1])
    assert sim.kspace.shape[-1] % sim.samples_per_readout == 0
    assert float(sim.trajectory.abs().max()) <= torch.pi
    operator = NufftOp(sim.trajectory, (32, 32), smaps=sim.smaps.unsqueeze(0))
    torch.testing.assert_close(sim.kspace, operator.forward(sim.ground_truth), atol=1e-4, rtol=1e-4)
    # Fewer readouts at higher acceleration.
    faster = simulate_noncartesian(trajectory, (32, 32), n_coils=3, acceleration=4, noise_level=0.0, seed=5)
    ratio = sim.kspace.shape[-1] / faster.kspace.shape[-1]
    assert 1.5 <= ratio <= 2.5


def test_radial_defaults_follow_acceleration() -> None:
    sim = simulate_noncartesian("radial", (32, 32), n_coils=2, acceleration=2, noise_level=0.0, seed=0)
    assert sim.samples_per_readout == 64  # 2x readout oversampling
    assert sim.kspace.shape[-1] // 64 == round(torch.pi / 2 * 32 / 2)  # Nyquist spokes / R


def test_ismrmrd_file_reads_back_to_the_simulated_kspace(tmp_path: Path) -> None:
    sim = simulate_cartesian((32, 32), n_coils=4, acceleration=2, n_slices=2, noise_level=0.02, seed=0)
    path = write_simulation(tmp_path / "cart.h5", sim)
    _, samples = read_ismrmrd(path, prewhiten=False)
    assert len(samples) == 2
    expected = remove_readout_oversampling(sim.kspace, 32)
    for i, sample in enumerate(samples):
        assert sample.matrix == (32, 32) and sample.index.slice == i
        torch.testing.assert_close(sample.kspace, expected[i], atol=1e-5, rtol=0)
        assert torch.equal(sample.mask.reshape(-1), sim.mask)
        assert torch.equal(sample.acs_mask.reshape(-1), sim.acs)
    torch.testing.assert_close(read_ground_truth(path), sim.ground_truth)


def test_stored_lines_are_exactly_the_simulated_oversampled_noisy_lines(tmp_path: Path) -> None:
    sim = simulate_cartesian((32, 24), n_coils=3, acceleration=2, n_slices=2, noise_level=0.05,
                             readout_oversampling=2, seed=4)
    path = write_simulation(tmp_path / "lines.h5", sim)
    _, acquisitions = read_acquisitions(path)
    noise = [a for a in acquisitions if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    lines = [a for a in acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    assert len(lines) == 2 * int(sim.mask.sum())
    expected = sim.kspace.numpy()
    for acq in lines:
        assert acq.number_of_samples == 48 and acq.center_sample == 24
        np.testing.assert_array_equal(acq.data, expected[acq.idx.slice, :, acq.idx.kspace_encode_step_1])
    np.testing.assert_array_equal(np.concatenate([a.data for a in noise], axis=1), sim.noise.numpy())
    # The oversampled margin of the image holds the simulated noise, not zeros.
    image = torch.fft.ifft(torch.fft.ifftshift(sim.kspace, dim=-1), dim=-1, norm="ortho")
    margin = torch.fft.fftshift(image, dim=-1)[:, :, sim.mask, :12]  # x outside the central 24 pixels
    assert float(margin.abs().square().mean().sqrt()) > 0.5 * 0.05


def test_cartesian_3d_layout_and_ground_truth() -> None:
    sim = simulate_cartesian_3d((8, 24, 16), n_coils=4, acceleration=2, noise_level=0.0, seed=2)
    assert sim.is_3d and sim.matrix == (8, 24, 16) and sim.trajectory_type == "cartesian3d"
    assert sim.kspace.shape == (1, 4, 8, 24, 32) and sim.ground_truth.shape == (1, 8, 24, 16)
    assert sim.mask.shape == (8, 24) and sim.acs.shape == (8, 24)
    assert bool((sim.mask == sim.mask[:1]).all()) and bool((sim.acs == sim.acs[:1]).all())  # same ky mask
    assert abs(sim.achieved_acceleration - 2) < 0.35 and sim.fov_mm[2] == pytest.approx(256 * 8 / 24)
    assert torch.all(sim.kspace[:, :, ~sim.mask] == 0)
    full = simulate_cartesian_3d((8, 24, 16), n_coils=4, acceleration=1, noise_level=0.0, seed=2)
    coil_images = ifftnc(remove_readout_oversampling(full.kspace, 16), 3)
    torch.testing.assert_close((full.smaps.conj() * coil_images).sum(1), full.ground_truth, atol=1e-5, rtol=0)


def test_cartesian_3d_file_reads_back_with_kz_encoding(tmp_path: Path) -> None:
    sim = simulate_cartesian_3d((8, 16, 16), n_coils=4, acceleration=2, noise_level=0.02, seed=3)
    path = write_simulation(tmp_path / "cart3d.h5", sim)
    _, acquisitions = read_acquisitions(path)
    lines = [a for a in acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    assert sorted({a.idx.kspace_encode_step_2 for a in lines}) == list(range(8))
    for acq in lines:
        expected = sim.kspace[0, :, acq.idx.kspace_encode_step_2, acq.idx.kspace_encode_step_1].numpy()
        np.testing.assert_array_equal(acq.data, expected)
    _, samples = read_ismrmrd(path, prewhiten=False)
    assert len(samples) == 1 and samples[0].matrix == (8, 16, 16)
    torch.testing.assert_close(samples[0].kspace, remove_readout_oversampling(sim.kspace, 16)[0],
                               atol=1e-5, rtol=0)
    assert torch.equal(samples[0].mask[..., 0], sim.mask) and torch.equal(samples[0].acs_mask[..., 0], sim.acs)


@pytest.mark.parametrize(("trajectory", "shape"), [("stack-of-stars", (8, 24, 24)), ("radial3d", (16, 16, 16))])
def test_3d_noncartesian_matches_the_nufft_and_reads_back(tmp_path: Path, trajectory: str,
                                                          shape: tuple[int, int, int]) -> None:
    clean = simulate_noncartesian(trajectory, shape, n_coils=4, acceleration=2, noise_level=0.0, seed=5)
    assert clean.is_3d and clean.trajectory.shape == (3, clean.kspace.shape[-1])
    operator = NufftOp(clean.trajectory, shape, smaps=clean.smaps.unsqueeze(0))
    torch.testing.assert_close(clean.kspace, operator.forward(clean.ground_truth), atol=1e-4, rtol=1e-4)

    sim = simulate_noncartesian(trajectory, shape, n_coils=4, acceleration=2, noise_level=0.01, seed=5)
    path = write_simulation(tmp_path / f"{trajectory}.h5", sim)
    header, samples = read_ismrmrd(path, prewhiten=False)
    assert header.encoding[0].encodedSpace.matrixSize.z == shape[0]
    assert header.encoding[0].trajectoryDescription.identifier == trajectory
    assert len(samples) == 1 and samples[0].matrix == shape and samples[0].trajectory_type == "radial"
    torch.testing.assert_close(samples[0].kspace, sim.kspace[0], atol=0, rtol=0)
    torch.testing.assert_close(samples[0].trajectory, sim.trajectory, atol=1e-6, rtol=0)  # wrap: 1 ulp

    _, acquisitions = read_acquisitions(path)
    data = [a for a in acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    first = data[0]
    assert first.trajectory_dimensions == 3 and first.number_of_samples == 2 * shape[-1]
    np.testing.assert_allclose(first.traj, sim.trajectory[:, :first.number_of_samples].numpy()[::-1].T)
    if trajectory == "stack-of-stars":  # spokes numbered within their kz partition
        assert sorted({a.idx.kspace_encode_step_2 for a in data}) == list(range(shape[0]))
        assert max(a.idx.kspace_encode_step_1 for a in data) + 1 == sim.readouts_per_partition
        assert all(np.ptp(a.traj[:, 2]) == 0 for a in data)  # kz is constant along a spoke


def test_3d_defaults_follow_acceleration() -> None:
    stars = simulate_noncartesian("stack-of-stars", (8, 16, 16), n_coils=1, acceleration=2, noise_level=0.0)
    assert stars.readouts_per_partition == round(torch.pi / 2 * 16 / 2)
    assert stars.kspace.shape[-1] == 8 * stars.readouts_per_partition * 32
    koosh = simulate_noncartesian("radial3d", 16, n_coils=1, acceleration=4, noise_level=0.0)
    assert koosh.matrix == (16, 16, 16)
    assert koosh.kspace.shape[-1] == round(torch.pi / 2 * 16 * 16 / 4) * 32


def test_noncartesian_file_reads_back(tmp_path: Path) -> None:
    sim = simulate_noncartesian("spiral", (32, 32), n_coils=2, acceleration=2, noise_level=0.01, seed=1)
    path = write_simulation(tmp_path / "spiral.h5", sim)
    _, samples = read_ismrmrd(path, prewhiten=False)
    assert len(samples) == 1 and samples[0].trajectory_type == "spiral"
    torch.testing.assert_close(samples[0].kspace, sim.kspace[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(samples[0].trajectory, sim.trajectory, atol=1e-6, rtol=0)


def test_cli_arguments_write_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = add_simulate_arguments(argparse.ArgumentParser())
    out = tmp_path / "cli.h5"
    args = parser.parse_args([str(out), "--coils", "2", "--matrix", "32", "--acceleration", "2",
                              "--trajectory", "radial", "--seed", "7"])
    assert run_simulate(args) == 0
    assert "radial" in capsys.readouterr().out
    _, samples = read_ismrmrd(out)
    assert samples[0].n_coils == 2 and samples[0].matrix == (32, 32)


@pytest.mark.parametrize("trajectory", ["cartesian3d", "stack-of-stars", "radial3d"])
def test_cli_writes_3d_files(tmp_path: Path, trajectory: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = add_simulate_arguments(argparse.ArgumentParser())
    out = tmp_path / "cli3d.h5"
    args = parser.parse_args([str(out), "--trajectory", trajectory, "--coils", "2", "--matrix", "16",
                              "--partitions", "8", "--acceleration", "4"])
    assert run_simulate(args) == 0
    assert "8x16x16" in capsys.readouterr().out
    _, samples = read_ismrmrd(out)
    assert len(samples) == 1 and samples[0].matrix == (8, 16, 16)
    assert read_ground_truth(out).shape == (1, 8, 16, 16)


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trajectory"):
        simulate_to_file(tmp_path / "x.h5", trajectory="rosette")
    with pytest.raises(ValueError, match="fastMRI"):
        simulate_to_file(tmp_path / "x.h5", trajectory="radial", fmt="fastmri")
    with pytest.raises(ValueError, match="mask_type"):
        simulate_cartesian((32, 32), mask_type="poisson")
    with pytest.raises(ValueError, match="n_coils"):
        simulate_cartesian((32, 32), n_coils=0)
    with pytest.raises(ValueError, match="square"):
        simulate_noncartesian("radial", (32, 48))
    with pytest.raises(ValueError, match="partitions"):
        simulate_to_file(tmp_path / "x.h5", trajectory="cartesian", matrix=32, partitions=8)
    with pytest.raises(ValueError, match="fastMRI"):
        simulate_to_file(tmp_path / "x.h5", trajectory="cartesian3d", fmt="fastmri")
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        simulate_cartesian_3d((4, 16, 16))


def test_fastmri_file_reads_back(tmp_path: Path) -> None:
    from mrdserve.models.data.fastmri import read_fastmri

    sim = simulate_to_file(tmp_path / "fm.h5", coils=3, acceleration=4, matrix=32, slices=2, noise=0.01,
                           seed=2, fmt="fastmri")
    volume = read_fastmri(tmp_path / "fm.h5")
    expected = remove_readout_oversampling(sim.kspace, 32)
    assert len(volume.samples) == 2
    for i, sample in enumerate(volume.samples):
        torch.testing.assert_close(sample.kspace, expected[i], atol=1e-5, rtol=0)
        assert torch.equal(sample.mask.reshape(-1), sim.mask)
        assert torch.equal(sample.acs_mask.reshape(-1), sim.acs)
    torch.testing.assert_close(volume.reference, sim.ground_truth.abs())
    torch.testing.assert_close(read_ground_truth(tmp_path / "fm.h5"), sim.ground_truth)


def test_image_content_families():
    """Piecewise-constant phantoms (the anatomy's ellipses only) are flat between edges, textured ones are not;
    "mixed" alternates per slice; non-Cartesian simulation refuses what it cannot make."""
    from mrdserve.models.data.simulate import simulate_cartesian, simulate_to_file

    def flat(image):  # fraction of pixels equal to their right neighbour
        magnitude = image.abs()
        return float(((magnitude[:, 1:] - magnitude[:, :-1]).abs() < 1e-4).float().mean())

    kwargs = {"n_coils": 2, "noise_level": 0.0, "readout_oversampling": 1, "with_noise_scan": False, "seed": 1}
    textured = simulate_cartesian(64, content="textured", **kwargs).ground_truth[0]
    piecewise = simulate_cartesian(64, content="piecewise", **kwargs).ground_truth[0]
    assert flat(piecewise) > flat(textured) + 0.2
    mixed = simulate_cartesian(64, n_slices=2, content="mixed", **kwargs).ground_truth
    assert flat(mixed[1]) > flat(mixed[0]) + 0.2
    with pytest.raises(ValueError, match="content"):
        simulate_cartesian(64, content="fractal", **kwargs)
    with pytest.raises(ValueError, match="2D Cartesian data only"):
        simulate_to_file("unused.h5", trajectory="radial", content="piecewise")
