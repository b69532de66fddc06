"""ISMRMRD writers and reader: round trips (Cartesian with ACS, oversampling and noise; 3D; non-Cartesian),
flags as written, streaming emission, and clear errors for bad files."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest
import torch

from mrdserve.models.data.acquisitions import AcquisitionAssembler, remove_readout_oversampling
from mrdserve.models.data.ismrmrd_io import header_from_file, read_acquisitions, read_ismrmrd
from mrdserve.models.data.ismrmrd_write import write_ismrmrd_cartesian, write_ismrmrd_noncartesian
from mrdserve.models.data.sample import Geometry, SampleIndex
from mrdserve.models.data.trajectory_units import units_from_header
from mrdserve.models.physics.fft import fft2c, ifft2c
from mrdserve.models.physics.prewhiten import noise_covariance, prewhitening_matrix

N_COILS, NY, NX = 4, 64, 64


def _phantom_kspace(n_samples: int = 1, seed: int = 0) -> torch.Tensor:
    """k-space [S, C, ky, kx] of a smooth disc phantom with random smooth coil phases."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, NY), torch.linspace(-1, 1, NX), indexing="ij")
    generator = torch.Generator().manual_seed(seed)
    images = []
    for s in range(n_samples):
        disc = ((x / 0.7) ** 2 + ((y - 0.05 * s) / 0.8) ** 2 < 1).to(torch.float32) * (1 + 0.3 * x)
        coils = []
        for c in range(N_COILS):
            angle = 2 * math.pi * c / N_COILS
            weight = torch.exp(-((x - 0.8 * math.cos(angle)) ** 2 + (y - 0.8 * math.sin(angle)) ** 2))
            phase = torch.rand(2, generator=generator) * 2
            coils.append(disc * weight * torch.exp(1j * (phase[0] * x + phase[1] * y)))
        images.append(torch.stack(coils))
    return fft2c(torch.stack(images).to(torch.complex64))


def _masks() -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.zeros(NY, dtype=torch.bool)
    rows[::2] = True
    acs = torch.zeros(NY, dtype=torch.bool)
    acs[NY // 2 - 6:NY // 2 + 6] = True
    return (rows | acs)[:, None], acs[:, None]


def _correlated_noise(n: int = 2048, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.eye(N_COILS) + 0.3 * np.tril(rng.standard_normal((N_COILS, N_COILS)), -1)
    white = (rng.standard_normal((N_COILS, n)) + 1j * rng.standard_normal((N_COILS, n))) / math.sqrt(2)
    return (0.01 * mixing @ white).astype(np.complex64)


def test_cartesian_round_trip_with_acs_oversampling_noise_and_indices(tmp_path: Path) -> None:
    kspace = _phantom_kspace(n_samples=3)
    mask, acs = _masks()
    kspace = kspace * mask
    noise = _correlated_noise()
    indices = [SampleIndex(slice=0, contrast=0), SampleIndex(slice=1, contrast=0),
               SampleIndex(slice=0, contrast=1)]
    geometry = Geometry(position=(1.0, -2.0, 3.5), field_of_view=(220.0, 220.0, 4.0))
    path = tmp_path / "cartesian.h5"
    header = write_ismrmrd_cartesian(path, kspace, mask, acs, readout_oversampling=2, noise=noise,
                                     geometry=geometry, indices=indices, acceleration=2)
    enc = header.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.reconSpace.matrixSize.x) == (2 * NX, NX)
    assert enc.encodedSpace.fieldOfView_mm.x == pytest.approx(440.0)
    assert enc.parallelImaging.accelerationFactor.kspace_encoding_step_1 == 2
    assert enc.encodingLimits.slice.maximum == 1 and enc.encodingLimits.contrast.maximum == 1

    _, raw = read_ismrmrd(path, prewhiten=False)
    assert [s.index for s in raw] == indices
    for sample, expected in zip(raw, kspace, strict=True):
        assert sample.matrix == (NY, NX) and sample.recon_matrix == (NY, NX) and not sample.prewhitened
        torch.testing.assert_close(sample.kspace, expected, atol=2e-6 * float(expected.abs().max()), rtol=0)
        assert torch.equal(sample.mask, mask) and torch.equal(sample.acs_mask, acs)
        assert sample.geometry.position == (1.0, -2.0, 3.5)
        assert sample.geometry.field_of_view == (220.0, 220.0, 4.0)
        assert sample.acceleration == (2,)

    _, whitened = read_ismrmrd(path)
    whitening = prewhitening_matrix(noise_covariance(torch.from_numpy(noise).to(torch.complex128)))
    expected = torch.einsum("ij,sjyx->siyx", whitening, kspace.to(torch.complex128))
    for sample, reference in zip(whitened, expected, strict=True):
        assert sample.prewhitened
        torch.testing.assert_close(sample.kspace.to(torch.complex128), reference,
                                   atol=1e-4 * float(reference.abs().max()), rtol=0)


def test_oversampled_kspace_is_stored_as_given(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(7)
    mask, acs = _masks()
    oversampled = torch.randn(2, N_COILS, NY, 2 * NX, dtype=torch.complex64, generator=generator) * mask
    path = tmp_path / "oversampled.h5"
    header = write_ismrmrd_cartesian(path, oversampled, mask, acs, readout_oversampling=2,
                                     kspace_is_oversampled=True, fov_mm=(200.0, 200.0, 5.0))
    enc = header.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.reconSpace.matrixSize.x) == (2 * NX, NX)
    assert (enc.encodedSpace.fieldOfView_mm.x, enc.reconSpace.fieldOfView_mm.x) == (400.0, 200.0)
    _, acqs = read_acquisitions(path)
    for acq in acqs:
        assert acq.number_of_samples == 2 * NX and acq.center_sample == NX
        np.testing.assert_array_equal(acq.data, oversampled[acq.idx.slice, :, acq.idx.kspace_encode_step_1])
    _, samples = read_ismrmrd(path)
    expected = remove_readout_oversampling(oversampled, NX)
    for sample, reference in zip(samples, expected, strict=True):
        assert sample.matrix == (NY, NX)
        torch.testing.assert_close(sample.kspace, reference, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not a multiple of readout_oversampling"):
        write_ismrmrd_cartesian(tmp_path / "x.h5", oversampled[..., :-1], readout_oversampling=2,
                                kspace_is_oversampled=True)


def test_written_flags_and_encode_steps(tmp_path: Path) -> None:
    kspace = _phantom_kspace()
    mask, acs = _masks()
    path = tmp_path / "flags.h5"
    write_ismrmrd_cartesian(path, kspace, mask, acs, noise=_correlated_noise(256), acceleration=2)
    _, acqs = read_acquisitions(path)
    noise = [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    data = [a for a in acqs if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    assert acqs[0].is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    assert sum(a.number_of_samples for a in noise) == 256
    assert [a.idx.kspace_encode_step_1 for a in data] == torch.nonzero(mask[:, 0]).flatten().tolist()
    assert data[0].is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE) and data[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)
    assert data[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    for acq in data:
        e1 = acq.idx.kspace_encode_step_1
        in_acs = bool(acs[e1, 0])
        both = acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
        only = acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
        assert (both or only) == in_acs
        if in_acs:
            assert both == (e1 % 2 == 0)  # on the R=2 lattice of the imaging lines
        assert acq.center_sample == NX // 2 and acq.number_of_samples == NX
    # the file is readable by ismrmrd's own Dataset class too
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    assert dataset.number_of_acquisitions() == len(acqs)
    np.testing.assert_array_equal(dataset.read_acquisition(len(acqs) - 1).data, acqs[-1].data)
    dataset.close()


def test_stream_assembler_emits_each_slice_with_its_last_acquisition(tmp_path: Path) -> None:
    path = tmp_path / "stream.h5"
    write_ismrmrd_cartesian(path, _phantom_kspace(n_samples=2), noise=_correlated_noise(256))
    xml, acqs = read_acquisitions(path)
    assembler = AcquisitionAssembler(xml)
    emitted_at = [i for i, acq in enumerate(acqs) if assembler.add(acq)]
    last_in_slice = [i for i, acq in enumerate(acqs) if acq.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)]
    assert emitted_at == last_in_slice and len(emitted_at) == 2
    assert assembler.finish() == []


def test_3d_cartesian_round_trip(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(3)
    kspace = torch.randn(1, 2, 6, 8, 10, dtype=torch.complex64, generator=generator)
    mask = torch.zeros(6, 8, 1, dtype=torch.bool)
    mask[:, ::2] = True
    mask[2:4, 3:5] = True
    path = tmp_path / "volume.h5"
    write_ismrmrd_cartesian(path, kspace * mask, mask, readout_oversampling=2)
    _, samples = read_ismrmrd(path)
    sample = samples[0]
    assert sample.matrix == (6, 8, 10) and sample.mask.shape == (6, 8, 1)
    assert torch.equal(sample.mask, mask)
    torch.testing.assert_close(sample.kspace, (kspace * mask)[0], atol=1e-5, rtol=0)


def test_noncartesian_round_trip(tmp_path: Path) -> None:
    n_spokes, n_samples, matrix = 12, 48, (32, 32)
    radius = torch.linspace(-math.pi, math.pi, n_samples + 1)[:-1]
    angles = torch.arange(n_spokes) * math.pi / n_spokes
    trajectory = torch.stack([(torch.sin(angles)[:, None] * radius).reshape(-1),
                              (torch.cos(angles)[:, None] * radius).reshape(-1)])
    generator = torch.Generator().manual_seed(4)
    data = torch.randn(2, 3, n_spokes * n_samples, dtype=torch.complex64, generator=generator)
    path = tmp_path / "radial.h5"
    write_ismrmrd_noncartesian(path, data, trajectory, n_samples, matrix=matrix, trajectory_type="radial",
                               indices=[SampleIndex(slice=0), SampleIndex(slice=0, repetition=1)])
    header, samples = read_ismrmrd(path)
    assert units_from_header(header) == "radians"
    assert [s.index.repetition for s in samples] == [0, 1]
    for sample, expected in zip(samples, data, strict=True):
        assert sample.trajectory_type == "radial" and sample.matrix == matrix
        torch.testing.assert_close(sample.kspace, expected)
        torch.testing.assert_close(sample.trajectory, trajectory, atol=1e-6, rtol=0)
    _, acqs = read_acquisitions(path)
    assert acqs[0].trajectory_dimensions == 2 and acqs[0].number_of_samples == n_samples
    np.testing.assert_allclose(acqs[0].traj[:, 0], trajectory[1, :n_samples].numpy(), atol=1e-6)  # kx first


def test_3d_stack_round_trip_numbers_spokes_per_partition(tmp_path: Path) -> None:
    n_partitions, n_spokes, n_samples, matrix = 4, 3, 16, (4, 16, 16)
    radius = torch.linspace(-math.pi, math.pi, n_samples + 1)[:-1]
    angles = torch.arange(n_spokes) * math.pi / n_spokes
    plane = torch.stack([(torch.sin(angles)[:, None] * radius).reshape(-1),
                         (torch.cos(angles)[:, None] * radius).reshape(-1)])
    kz = (2 * math.pi * (torch.arange(n_partitions) - n_partitions // 2) / n_partitions)
    trajectory = torch.cat([kz.repeat_interleave(plane.shape[1])[None], plane.repeat(1, n_partitions)])
    data = torch.randn(1, 2, trajectory.shape[1], dtype=torch.complex64, generator=torch.Generator().manual_seed(2))
    path = tmp_path / "stack.h5"
    header = write_ismrmrd_noncartesian(path, data, trajectory, n_samples, matrix=matrix,
                                        trajectory_identifier="stack-of-stars", readouts_per_partition=n_spokes)
    assert header.encoding[0].encodedSpace.matrixSize.z == n_partitions
    assert header.encoding[0].encodingLimits.kspace_encoding_step_2.maximum == n_partitions - 1
    _, acqs = read_acquisitions(path)
    assert [(a.idx.kspace_encode_step_2, a.idx.kspace_encode_step_1) for a in acqs] == [
        (p, r) for p in range(n_partitions) for r in range(n_spokes)]
    np.testing.assert_allclose(acqs[-1].traj[:, 2], kz[-1].item(), atol=1e-6)  # stored (kx, ky, kz)
    _, samples = read_ismrmrd(path)
    assert samples[0].matrix == matrix
    torch.testing.assert_close(samples[0].kspace, data[0], atol=0, rtol=0)
    torch.testing.assert_close(samples[0].trajectory, trajectory, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="readouts_per_partition"):
        write_ismrmrd_noncartesian(path, data, trajectory, n_samples, matrix=matrix, readouts_per_partition=5)


def test_bad_files_raise_errors_naming_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        read_ismrmrd(tmp_path / "missing.h5")
    good = tmp_path / "good.h5"
    write_ismrmrd_cartesian(good, _phantom_kspace())
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        read_ismrmrd(truncated)
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        read_ismrmrd(text)
    no_header = tmp_path / "no_header.h5"
    with h5py.File(good, "r") as src, h5py.File(no_header, "w") as dst:
        src.copy("dataset/data", dst.require_group("dataset"), "data")
    with pytest.raises(ValueError, match="no 'xml' header"):
        read_ismrmrd(no_header)
    with pytest.raises(ValueError, match="no ISMRMRD dataset group 'other'"):
        read_ismrmrd(good, dataset="other")
    no_data = tmp_path / "no_data.h5"
    with h5py.File(good, "r") as src, h5py.File(no_data, "w") as dst:
        src.copy("dataset/xml", dst.require_group("dataset"), "xml")
    with pytest.raises(ValueError, match="holds a header but no acquisitions"):
        read_ismrmrd(no_data)
    assert header_from_file(no_data).encoding[0].reconSpace.matrixSize.x == NX


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    kspace = _phantom_kspace()
    with pytest.raises(ValueError, match=r"kspace must be \[S, C, ky, kx\]"):
        write_ismrmrd_cartesian(tmp_path / "x.h5", kspace[0])
    with pytest.raises(ValueError, match="acs_mask marks rows that mask leaves unsampled"):
        mask = torch.zeros(NY, 1, dtype=torch.bool)
        mask[0] = True
        write_ismrmrd_cartesian(tmp_path / "x.h5", kspace, mask, ~mask)
    with pytest.raises(ValueError, match="noise must be"):
        write_ismrmrd_cartesian(tmp_path / "x.h5", kspace, noise=np.zeros((2, 10), np.complex64))
    with pytest.raises(ValueError, match="not a multiple of samples_per_readout"):
        write_ismrmrd_noncartesian(tmp_path / "x.h5", torch.zeros(1, 1, 10, dtype=torch.complex64),
                                   torch.zeros(2, 10), 3, matrix=(8, 8))


@pytest.mark.skipif(shutil.which("ismrmrd_recon_cartesian_2d") is None,
                    reason="ismrmrd_recon_cartesian_2d (Debian ismrmrd-tools) is not installed")
def test_cpp_reference_recon_reads_our_files(tmp_path: Path) -> None:
    kspace = _phantom_kspace()
    path = tmp_path / "cpp.h5"
    write_ismrmrd_cartesian(path, kspace, readout_oversampling=2)
    subprocess.run(["ismrmrd_recon_cartesian_2d", str(path)], check=True, capture_output=True, timeout=60)
    with h5py.File(path, "r") as f:
        image = np.asarray(f["dataset/cpp/data"])[0, 0, 0]
    ours = ifft2c(kspace[0])
    ours = ours.abs().square().sum(0).sqrt().numpy()
    a, b = image.ravel() - image.mean(), ours.ravel() - ours.mean()
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99


@pytest.mark.parametrize("old, new, message", [
    ("<H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>",
     f"<H1resonanceFrequency_Hz>{'9' * 400}</H1resonanceFrequency_Hz>", "out of the 64-bit range"),
    ("<systemFieldStrength_T>1.5</systemFieldStrength_T>", "<systemFieldStrength_T>nan</systemFieldStrength_T>",
     "not a finite number"),
    ("<receiverChannels>1</receiverChannels>", "<receiverChannels>Jane^Doe</receiverChannels>",
     "receiverChannels does not hold a valid int"),
])
def test_header_values_that_cannot_be_used_are_named_without_their_value(old, new, message):
    from mrdserve.models.data.input_errors import InputError
    from mrdserve.models.data.ismrmrd_header import build_header, header_to_xml, parse_header

    xml = header_to_xml(build_header((16, 16)))
    assert old in xml
    with pytest.raises(InputError, match=message) as refused:
        parse_header(xml.replace(old, new))
    assert "Jane" not in str(refused.value) and "999" not in str(refused.value)
