"""The stream assembler: slices emitted on their last line, placement, averaging, prewhitening, errors."""

from __future__ import annotations

import math

import ismrmrd
import numpy as np
import pytest
import torch

from mrdserve.models.data.acquisitions import AcquisitionAssembler
from mrdserve.models.data.ismrmrd_header import build_header, header_to_xml
from mrdserve.models.physics.prewhiten import noise_covariance

N_COILS, NY, NX = 3, 8, 16


def _acq(data: np.ndarray, e1: int = 0, flags: tuple[int, ...] = (), center: int | None = None,
         traj: np.ndarray | None = None, e2: int = 0, **idx: int) -> ismrmrd.Acquisition:
    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, dtype=np.complex64),
                                         None if traj is None else np.ascontiguousarray(traj, np.float32))
    acq.center_sample = data.shape[1] // 2 if center is None else center
    acq.idx.kspace_encode_step_1 = e1
    acq.idx.kspace_encode_step_2 = e2
    for name, value in idx.items():
        setattr(acq.idx, name, value)
    for flag in flags:
        acq.set_flag(flag)
    return acq


def _kspace(seed: int, shape: tuple[int, ...] = (N_COILS, NY, NX)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _header(**kwargs):
    defaults = {"matrix": (NX, NY), "n_coils": N_COILS,
                "encoding_limits": {"slice": (0, 1, 0)}}
    return build_header(**(defaults | kwargs))


def _slice_acqs(kspace: np.ndarray, slice_: int, rows=None, flags_for=None) -> list[ismrmrd.Acquisition]:
    rows = list(range(kspace.shape[1])) if rows is None else list(rows)
    acqs = []
    for n, row in enumerate(rows):
        flags = []
        if n == 0:
            flags.append(ismrmrd.ACQ_FIRST_IN_SLICE)
        if n == len(rows) - 1:
            flags.append(ismrmrd.ACQ_LAST_IN_SLICE)
        if flags_for is not None:
            flags += flags_for(row)
        acqs.append(_acq(kspace[:, row], e1=row, flags=tuple(flags), slice=slice_))
    return acqs


def test_slices_are_emitted_when_their_last_line_arrives() -> None:
    first, second = _kspace(0), _kspace(1)
    assembler = AcquisitionAssembler(_header(), prewhiten=False)
    emitted = []
    for acq in _slice_acqs(first, 0) + _slice_acqs(second, 1):
        out = assembler.add(acq)
        emitted.append(len(out))
        for sample in out:
            expected = first if sample.index.slice == 0 else second
            np.testing.assert_array_equal(sample.kspace.numpy(), expected)
    assert emitted == [0] * (NY - 1) + [1] + [0] * (NY - 1) + [1]
    assert assembler.finish() == []


def test_header_xml_with_trailing_nul_and_geometry_kept() -> None:
    xml = header_to_xml(_header(fov_mm=(200.0, 100.0, 4.0))) + "\x00"
    assembler = AcquisitionAssembler(xml, prewhiten=False)
    acqs = _slice_acqs(_kspace(2), 0)
    acqs[0].position[:] = (1.0, 2.0, 3.0)
    acqs[0].read_dir[:] = (0.0, 1.0, 0.0)
    sample = next(s for a in acqs for s in assembler.add(a))
    assert sample.geometry.position == (1.0, 2.0, 3.0)
    assert sample.geometry.read_dir == (0.0, 1.0, 0.0)
    assert sample.geometry.field_of_view == (200.0, 100.0, 4.0)
    assert sample.reference_head.idx.kspace_encode_step_1 == 0
    assert sample.matrix == (NY, NX) and sample.recon_matrix == (NY, NX)


def test_without_flags_the_encoding_limits_close_the_slice() -> None:
    kspace = _kspace(3)
    assembler = AcquisitionAssembler(_header(), prewhiten=False)
    outputs = [assembler.add(_acq(kspace[:, row], e1=row)) for row in range(NY)]
    assert [len(o) for o in outputs] == [0] * (NY - 1) + [1]


def test_multi_slice_contrast_repetition_kept_and_finish_flushes() -> None:
    header = _header(encoding_limits={"slice": (0, 1, 0), "contrast": (0, 1, 0), "repetition": (0, 2, 0)})
    assembler = AcquisitionAssembler(header, prewhiten=False)
    kspace = _kspace(4)
    for row in range(NY):  # no slice flags and not in order of the limits: only finish() closes them
        for key in ((0, 1, 2), (1, 0, 1)):
            assembler.add(_acq(kspace[:, NY - 1 - row], e1=NY - 1 - row, slice=key[0], contrast=key[1],
                               repetition=key[2]))
    samples = assembler.finish()
    assert [(s.index.slice, s.index.contrast, s.index.repetition) for s in samples] == [(0, 1, 2), (1, 0, 1)]
    for sample in samples:
        np.testing.assert_array_equal(sample.kspace.numpy(), kspace)


def test_averages_are_averaged_and_mask_acs_marked() -> None:
    kspace, other = _kspace(5), _kspace(6)
    rows = [0, 2, 3, 4, 6]
    acs = {3, 4}

    def flags_for(row: int) -> list[int]:
        return [ismrmrd.ACQ_IS_PARALLEL_CALIBRATION] if row in acs else []

    acqs = _slice_acqs(kspace, 0, rows=rows, flags_for=flags_for)
    extra = _acq(other[:, 2], e1=2, average=1)
    assembler = AcquisitionAssembler(_header(acceleration=(2,)), prewhiten=False)
    samples = [s for a in [extra, *acqs] for s in assembler.add(a)]
    assert len(samples) == 1
    sample = samples[0]
    expected = np.zeros_like(kspace)
    expected[:, rows] = kspace[:, rows]
    expected[:, 2] = (kspace[:, 2] + other[:, 2]) / 2
    np.testing.assert_allclose(sample.kspace.numpy(), expected, atol=1e-6)
    assert sample.mask.shape == (NY, 1) and sample.mask.dtype == torch.bool
    assert sorted(torch.nonzero(sample.mask[:, 0]).flatten().tolist()) == rows
    assert sorted(torch.nonzero(sample.acs_mask[:, 0]).flatten().tolist()) == sorted(acs)
    assert sample.acceleration == (2,)


def test_asymmetric_echo_and_partial_fourier_are_zero_filled() -> None:
    kspace = _kspace(7)
    header = _header(encoding_limits={"kspace_encoding_step_1": (0, 5, 2)})  # 6 lines, centre at index 2
    assembler = AcquisitionAssembler(header, prewhiten=False)
    start = 4  # the echo misses the first 4 of 16 readout points
    for e1 in range(6):
        flags = (ismrmrd.ACQ_LAST_IN_SLICE,) if e1 == 5 else ()
        out = assembler.add(_acq(kspace[:, e1, start:], e1=e1, center=NX // 2 - start, flags=flags))
    sample = out[0]
    expected = np.zeros_like(kspace)
    for e1 in range(6):
        expected[:, e1 - 2 + NY // 2, start:] = kspace[:, e1, start:]
    np.testing.assert_array_equal(sample.kspace.numpy(), expected)
    assert torch.nonzero(sample.mask[:, 0]).flatten().tolist() == list(range(2, 8))


def test_discarded_and_reversed_samples() -> None:
    kspace = _kspace(8)
    assembler = AcquisitionAssembler(_header(), prewhiten=False)
    for row in range(NY):
        padded = np.concatenate([np.ones((N_COILS, 2)), kspace[:, row], np.ones((N_COILS, 1))], axis=1)
        flags = [ismrmrd.ACQ_LAST_IN_SLICE] if row == NY - 1 else []
        if row % 2:
            padded, flags = padded[:, ::-1], [*flags, ismrmrd.ACQ_IS_REVERSE]
        acq = _acq(padded, e1=row, center=NX // 2 + (2 if row % 2 == 0 else 1), flags=tuple(flags))
        acq.discard_pre, acq.discard_post = (2, 1) if row % 2 == 0 else (1, 2)
        out = assembler.add(acq)
    np.testing.assert_array_equal(out[0].kspace.numpy(), kspace)


def test_noise_scans_prewhiten_the_data() -> None:
    rng = np.random.default_rng(9)
    mixing = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.2, 0.3, 0.5]])
    white = (rng.standard_normal((N_COILS, 4000)) + 1j * rng.standard_normal((N_COILS, 4000))) / math.sqrt(2)
    noise = (mixing @ white).astype(np.complex64)
    kspace = _kspace(10)
    assembler = AcquisitionAssembler(_header())
    for start in range(0, 4000, 1000):
        noise_scan = _acq(noise[:, start:start + 1000], flags=(ismrmrd.ACQ_IS_NOISE_MEASUREMENT,))
        assert assembler.add(noise_scan) == []
    sample = next(s for a in _slice_acqs(kspace, 0) for s in assembler.add(a))
    assert sample.prewhitened
    covariance = noise_covariance(torch.from_numpy(noise).to(torch.complex128))
    whitening = torch.linalg.inv(torch.linalg.cholesky(covariance)).numpy()
    expected = np.einsum("ij,jyx->iyx", whitening, kspace)
    np.testing.assert_allclose(sample.kspace.numpy(), expected, rtol=1e-4, atol=1e-4)
    whitened_noise = whitening @ noise
    whitened_covariance = whitened_noise @ whitened_noise.conj().T / (whitened_noise.shape[1] - 1)
    np.testing.assert_allclose(whitened_covariance, np.eye(N_COILS), atol=1e-4)


def test_skipped_flags_never_become_data() -> None:
    kspace = _kspace(11)
    assembler = AcquisitionAssembler(_header(), prewhiten=False)
    navigator = _acq(np.full((N_COILS, NX), 100.0), e1=1, flags=(ismrmrd.ACQ_IS_NAVIGATION_DATA,))
    phasecorr = _acq(np.full((N_COILS, NX), 100.0), e1=2, flags=(ismrmrd.ACQ_IS_PHASECORR_DATA,))
    dummy = _acq(np.full((N_COILS, NX), 100.0), e1=3, flags=(ismrmrd.ACQ_IS_DUMMYSCAN_DATA,))
    samples = [s for a in [navigator, phasecorr, dummy, *_slice_acqs(kspace, 0)] for s in assembler.add(a)]
    np.testing.assert_array_equal(samples[0].kspace.numpy(), kspace)
    assert assembler.skipped == {"navigation": 1, "phase correction": 1, "dummy scan": 1}


def test_3d_lines_placed_by_both_encode_steps() -> None:
    nz = 4
    kspace = _kspace(12, (N_COILS, nz, NY, NX))
    header = build_header((NX, NY, nz), n_coils=N_COILS)
    assembler = AcquisitionAssembler(header, prewhiten=False)
    positions = [(z, y) for z in range(nz) for y in range(NY) if (y + z) % 2 == 0 or y in (3, 4)]
    for n, (z, y) in enumerate(positions):
        flags = (ismrmrd.ACQ_LAST_IN_SLICE,) if n == len(positions) - 1 else ()
        out = assembler.add(_acq(kspace[:, z, y], e1=y, e2=z, flags=flags))
    sample = out[0]
    assert sample.matrix == (nz, NY, NX) and sample.mask.shape == (nz, NY, 1)
    expected = np.zeros_like(kspace)
    for z, y in positions:
        expected[:, z, y] = kspace[:, z, y]
    np.testing.assert_array_equal(sample.kspace.numpy(), expected)
    assert int(sample.mask.sum()) == len(positions)


def test_noncartesian_readouts_concatenated_with_trajectory_in_radians() -> None:
    n_spokes, n_samples = 6, 32
    header = build_header((64, 64), n_coils=2, trajectory="radial")
    assembler = AcquisitionAssembler(header, prewhiten=False)
    radius = np.linspace(-0.45, 0.45, n_samples)  # cycles/pixel, as Gadgetron stores it
    data = _kspace(13, (2, n_spokes * n_samples))
    for spoke in range(n_spokes):
        angle = spoke * math.pi / n_spokes
        traj = np.stack([np.cos(angle) * radius, np.sin(angle) * radius], axis=1)  # columns kx, ky
        flags = (ismrmrd.ACQ_LAST_IN_SLICE,) if spoke == n_spokes - 1 else ()
        part = slice(spoke * n_samples, (spoke + 1) * n_samples)
        out = assembler.add(_acq(data[:, part], e1=spoke, traj=traj, flags=flags))
    sample = out[0]
    assert not sample.is_cartesian and sample.trajectory_type == "radial"
    assert sample.kspace.shape == (2, n_spokes * n_samples)
    assert sample.trajectory.shape == (2, n_spokes * n_samples)
    np.testing.assert_array_equal(sample.kspace.numpy(), data)
    angles = np.repeat(np.arange(n_spokes) * math.pi / n_spokes, n_samples)
    radii = np.tile(radius, n_spokes) * 2 * math.pi
    np.testing.assert_allclose(sample.trajectory[0].numpy(), np.sin(angles) * radii, atol=1e-5)  # row 0 = ky
    np.testing.assert_allclose(sample.trajectory[1].numpy(), np.cos(angles) * radii, atol=1e-5)
    # an override changes the interpretation
    assembler = AcquisitionAssembler(header, trajectory_units="radians", prewhiten=False)
    assembler.add(_acq(data[:, :n_samples], traj=np.stack([radius, radius], axis=1)))
    np.testing.assert_allclose(assembler.finish()[0].trajectory[0].numpy(), radius, atol=1e-6)


def test_errors_name_the_problem() -> None:
    kspace = _kspace(14)
    assembler = AcquisitionAssembler(_header())
    assembler.add(_acq(kspace[:, 0], e1=0))
    with pytest.raises(ValueError, match=r"inconsistent coil counts.*active_channels 2 after 3"):
        assembler.add(_acq(kspace[:2, 1], e1=1))
    with pytest.raises(ValueError, match=r"inconsistent sample counts.*number_of_samples 8 after 16"):
        assembler.add(_acq(kspace[:, 1, :8], e1=1))
    with pytest.raises(ValueError, match="kspace_encode_step_1 = 12 lies outside the encoded matrix"):
        assembler.add(_acq(kspace[:, 1], e1=12))
    with pytest.raises(ValueError, match="kspace_encode_step_1 = 9 lies outside"):
        assembler.add(_acq(kspace[:, 1], e1=9, slice=1))  # first line of slice 1: nothing left open
    assert [s.index.slice for s in assembler.finish()] == [0]
    with pytest.raises(ValueError, match="not ISMRMRD XML"):
        AcquisitionAssembler("this is not xml")
    with pytest.raises(ValueError, match="not valid ISMRMRD XML"):
        AcquisitionAssembler("<html><body/></html>")
    only_noise = AcquisitionAssembler(_header())
    only_noise.add(_acq(kspace[:, 0], flags=(ismrmrd.ACQ_IS_NOISE_MEASUREMENT,)))
    with pytest.raises(ValueError, match=r"no data acquisitions.*1 noise scans"):
        only_noise.finish()
    assert only_noise.finish(require_data=False) == []
    mismatch = AcquisitionAssembler(_header())
    noise = _kspace(15, (2, 64))
    mismatch.add(_acq(noise, flags=(ismrmrd.ACQ_IS_NOISE_MEASUREMENT,)))
    with pytest.raises(ValueError, match="noise scans have 2 coils but slice 0 data has 3"):
        for acq in _slice_acqs(kspace, 0):
            mismatch.add(acq)
    radial = AcquisitionAssembler(build_header((16, 16), n_coils=3, trajectory="spiral"))
    with pytest.raises(ValueError, match="carries no trajectory"):
        radial.add(_acq(kspace[:, 0]))
