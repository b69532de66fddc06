"""Assemble ISMRMRD acquisitions (from a file or a live stream) into ``KSpaceSample`` images.

One assembler serves files and streams: ``add`` returns the images an acquisition completes (its
``ACQ_LAST_IN_SLICE`` flag, or, for producers that set no slice flags, the line at the encoding-limit
maximum (of the last average) when the image's lines arrived in increasing order from the minimum);
``finish`` flushes what is still open at the end of the stream.

Rules:
- Noise scans (``ACQ_IS_NOISE_MEASUREMENT``) never become data; they give the noise covariance whose inverse
  Cholesky factor prewhitens every later image (``prewhitened=True``), scaled by the dwell-time ratio.
- Skipped (counted in ``skipped``, never data): navigator, phase-correction, dummy-scan, real-time and HP
  feedback, surface-coil-correction and phase-stabilisation acquisitions.
- Cartesian: readouts are placed by ``center_sample`` (after ``discard_pre/post``; reversed readouts flipped)
  in the encoded readout, asymmetric echo and partial Fourier are zero-filled, lines land at
  ``row = e1 - center + ny // 2`` (and likewise e2 for 3D), repeated lines (averages) are averaged, readout
  oversampling (encoded vs recon FOV along x) is removed in image space, ACS lines are the ones flagged
  ``ACQ_IS_PARALLEL_CALIBRATION(_AND_IMAGING)``.
- Non-Cartesian (header trajectory other than cartesian, or epi with a trajectory): readouts are
  concatenated to ``[C, K]``; the trajectory (ISMRMRD stores kx, ky[, kz] per sample) becomes ``(d, K)``
  rows (ky, kx) / (kz, ky, kx) in radians/sample (``trajectory_units``); a third column of a 2D
  trajectory is taken as density weights. A Cartesian header ignores stored trajectories.
- Images are keyed by (slice, contrast, repetition, set, phase); geometry comes from the image's first
  acquisition (all-zero direction vectors fall back to the axial defaults) and the header's recon FOV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import ismrmrd
import numpy as np
import torch

from mrdserve.models.data.input_errors import InputError
from mrdserve.models.data.ismrmrd_header import EncodingInfo, encoding_info, parse_header
from mrdserve.models.data.sample import Geometry, KSpaceSample, SampleIndex
from mrdserve.models.data.trajectory_units import to_radians
from mrdserve.models.physics.prewhiten import noise_covariance, prewhiten, prewhitening_matrix

SKIPPED_FLAGS: dict[int, str] = {
    ismrmrd.ACQ_IS_NAVIGATION_DATA: "navigation",
    ismrmrd.ACQ_IS_PHASECORR_DATA: "phase correction",
    ismrmrd.ACQ_IS_DUMMYSCAN_DATA: "dummy scan",
    ismrmrd.ACQ_IS_RTFEEDBACK_DATA: "real-time feedback",
    ismrmrd.ACQ_IS_HPFEEDBACK_DATA: "HP feedback",
    ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA: "surface coil correction",
    ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE: "phase stabilisation reference",
    ismrmrd.ACQ_IS_PHASE_STABILIZATION: "phase stabilisation",
}
_CALIBRATION_FLAGS = (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
_TRAJECTORY_TYPES = {"cartesian": "cartesian", "epi": "cartesian", "radial": "radial",
                     "goldenangle": "radial", "spiral": "spiral", "other": "other"}


@dataclass
class _OpenImage:
    """Acquisitions of one image collected so far."""

    head: Any
    n_coils: int
    n_samples: int
    line_sums: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    line_counts: dict[tuple[int, int], int] = field(default_factory=dict)
    calibration: set[tuple[int, int]] = field(default_factory=set)
    first_step: int | None = None  # e1 of the first line
    last_position: tuple[int, int] = (-1, -1)
    in_order: bool = True  # lines so far arrived in non-decreasing (e2, e1) order
    readouts: list[np.ndarray] = field(default_factory=list)
    trajectories: list[np.ndarray] = field(default_factory=list)
    nbytes: int = 0  # k-space held so far


def _key(acq: Any) -> tuple[int, int, int, int, int]:
    idx = acq.idx
    return int(idx.slice), int(idx.contrast), int(idx.repetition), int(idx.set), int(idx.phase)


def _direction(values: Any, default: tuple[float, float, float]) -> tuple[float, float, float]:
    vector = tuple(float(v) for v in values)
    return default if all(v == 0.0 for v in vector) else vector  # type: ignore[return-value]


def _geometry(head: Any, info: EncodingInfo) -> Geometry:
    for name in ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position"):
        if not all(math.isfinite(float(v)) for v in getattr(head, name)):
            raise InputError(f"an acquisition's {name} holds NaN or infinite values", "inconsistent_data")
    defaults = Geometry()
    return Geometry(
        position=tuple(float(v) for v in head.position),  # type: ignore[arg-type]
        read_dir=_direction(head.read_dir, defaults.read_dir),
        phase_dir=_direction(head.phase_dir, defaults.phase_dir),
        slice_dir=_direction(head.slice_dir, defaults.slice_dir),
        patient_table_position=tuple(float(v) for v in head.patient_table_position),  # type: ignore[arg-type]
        field_of_view=info.recon_fov,
    )


def remove_readout_oversampling(kspace: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse FFT along the readout, keep the central ``length`` samples of the image, FFT back."""
    full = kspace.shape[-1]
    if length == full:
        return kspace
    image = torch.fft.ifft(torch.fft.ifftshift(kspace, dim=-1), dim=-1, norm="ortho")
    image = torch.fft.fftshift(image, dim=-1)
    start = full // 2 - length // 2
    image = image[..., start:start + length]
    return torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(image, dim=-1), dim=-1, norm="ortho"), dim=-1)


class AcquisitionAssembler:
    """Turns a stream of ``ismrmrd.Acquisition`` into ``KSpaceSample`` images (see the module docstring).

    ``noise_covariance`` may come from a separate noise measurement (a dependency); noise scans in the
    stream replace it. ``prewhiten=False`` keeps the data as acquired.
    """

    def __init__(self, header: Any, trajectory_units: str | None = None, *, prewhiten: bool = True,
                 noise_covariance: torch.Tensor | None = None) -> None:
        self.header = parse_header(header)
        self.info = encoding_info(self.header)
        self.trajectory_units = trajectory_units
        self.prewhiten = prewhiten
        self.cartesian = self.info.trajectory == "cartesian"
        self.trajectory_type = _TRAJECTORY_TYPES.get(self.info.trajectory, "other")
        self.skipped: dict[str, int] = {}
        self.n_noise_scans = 0
        self.n_emitted = 0
        self._noise: list[np.ndarray] = []
        self._noise_dwell_us = 0.0
        self._external_covariance = noise_covariance
        self._whitening: torch.Tensor | None = None
        self._whitening_dwell_us: float | None = None
        self._open: dict[tuple[int, int, int, int, int], _OpenImage] = {}
        self._saw_slice_flags = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in images that are not complete yet and in noise scans (streams bound this)."""
        return sum(image.nbytes for image in self._open.values()) + sum(noise.nbytes for noise in self._noise)

    @property
    def open_images(self) -> int:
        return len(self._open)

    # ----------------------------------------------------------------------------------------- public
    def add(self, acq: Any) -> list[KSpaceSample]:
        """Take one acquisition; return the images it completes (usually none)."""
        if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            self._add_noise(acq)
            return []
        last_in_slice = acq.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)
        if last_in_slice or acq.is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE):
            self._saw_slice_flags = True
        skipped = [name for flag, name in SKIPPED_FLAGS.items() if acq.is_flag_set(flag)]
        if skipped:
            self.skipped[skipped[0]] = self.skipped.get(skipped[0], 0) + 1
        else:
            self._add_data(acq)
        key = _key(acq)
        if key in self._open and (last_in_slice or (not self._saw_slice_flags and self._last_by_limits(acq))):
            return self._close(key)
        return []

    def finish(self, require_data: bool = True) -> list[KSpaceSample]:
        """Flush every image still open (end of stream); ValueError if the stream held no data at all."""
        samples = [sample for key in list(self._open) for sample in self._close(key)]
        if require_data and self.n_emitted == 0:
            raise InputError(f"no data acquisitions in the stream ({self.n_noise_scans} noise scans, "
                             f"{sum(self.skipped.values())} skipped acquisitions)", "no_data")
        return samples

    @property
    def noise_covariance(self) -> torch.Tensor | None:
        """Noise covariance ``[C, C]`` (complex128) from the noise scans seen so far, or the one given."""
        if self._noise:
            noise = torch.from_numpy(np.concatenate(self._noise, axis=1))
            return noise_covariance(noise.to(torch.complex128))
        return self._external_covariance

    # ---------------------------------------------------------------------------------------- private
    def _add_noise(self, acq: Any) -> None:
        data = np.array(acq.data, dtype=np.complex64, copy=True)
        if self._noise and data.shape[0] != self._noise[0].shape[0]:
            raise ValueError(f"noise scans have inconsistent coil counts (active_channels {data.shape[0]} "
                             f"vs {self._noise[0].shape[0]})")
        self._noise.append(data)
        self._noise_dwell_us = float(acq.sample_time_us)
        self.n_noise_scans += 1
        self._whitening = None

    def _last_by_limits(self, acq: Any) -> bool:
        """Without slice flags: the line at the encoding-limit maximum (last average) of an in-order image."""
        limits = self.info.e1_limits
        image = self._open[_key(acq)]
        if limits is None or int(acq.idx.kspace_encode_step_1) != limits[1] or not image.in_order:
            return False
        if image.first_step != limits[0]:
            return False
        if int(acq.idx.average) < self.info.average_max:
            return False
        e2_limits = self.info.e2_limits
        return not (self.info.is_3d and e2_limits is not None
                    and int(acq.idx.kspace_encode_step_2) != e2_limits[1])

    def _add_data(self, acq: Any) -> None:
        key = _key(acq)
        n_coils, n_samples = int(acq.active_channels), int(acq.number_of_samples)
        image = self._open.get(key)
        if image is None:
            image = self._open[key] = _OpenImage(head=acq.getHead(), n_coils=n_coils, n_samples=n_samples)
        if n_coils != image.n_coils:
            raise ValueError(f"inconsistent coil counts in slice {key[0]} (contrast {key[1]}, repetition "
                             f"{key[2]}): active_channels {n_coils} after {image.n_coils}")
        if n_samples != image.n_samples:
            raise ValueError(f"inconsistent sample counts in slice {key[0]} (contrast {key[1]}, repetition "
                             f"{key[2]}): number_of_samples {n_samples} after {image.n_samples}")
        data = np.array(acq.data, dtype=np.complex64, copy=True)
        pre, post = int(acq.discard_pre), int(acq.discard_post)
        if pre + post >= n_samples:
            raise ValueError(f"discard_pre ({pre}) + discard_post ({post}) leave no samples of {n_samples}")
        keep = slice(pre, n_samples - post)
        if self.cartesian or (self.info.trajectory == "epi" and acq.trajectory_dimensions == 0):
            self._add_cartesian_line(image, acq, data, keep)
        else:
            if acq.trajectory_dimensions == 0:
                raise ValueError(f"header trajectory is {self.info.trajectory!r} but an acquisition carries "
                                 "no trajectory (trajectory_dimensions 0)")
            if image.trajectories and acq.trajectory_dimensions != image.trajectories[0].shape[1]:
                raise ValueError(f"inconsistent trajectory_dimensions in slice {key[0]}: "
                                 f"{acq.trajectory_dimensions} after {image.trajectories[0].shape[1]}")
            image.readouts.append(data[:, keep])
            image.trajectories.append(np.array(acq.traj, dtype=np.float32, copy=True)[keep])
            image.nbytes += image.readouts[-1].nbytes + image.trajectories[-1].nbytes

    def _add_cartesian_line(self, image: _OpenImage, acq: Any, data: np.ndarray, keep: slice) -> None:
        encoded_x, encoded_y, encoded_z = self.info.encoded_matrix
        center = int(acq.center_sample) - keep.start
        data = data[:, keep]
        if acq.is_flag_set(ismrmrd.ACQ_IS_REVERSE):
            data = data[:, ::-1]  # center_sample is taken to refer to the flipped (k-ordered) readout
        length = data.shape[1]
        start = 0 if (int(acq.center_sample) == 0 and length == encoded_x) else encoded_x // 2 - center
        if start < 0 or start + length > encoded_x:
            raise ValueError(f"readout of {length} samples with center_sample {acq.center_sample} does not "
                             f"fit the encoded readout of {encoded_x} samples")
        row = self._row(int(acq.idx.kspace_encode_step_1), self.info.e1_limits, encoded_y,
                        "kspace_encode_step_1")
        partition = 0
        if encoded_z > 1:
            partition = self._row(int(acq.idx.kspace_encode_step_2), self.info.e2_limits, encoded_z,
                                  "kspace_encode_step_2")
        line = np.zeros((data.shape[0], encoded_x), dtype=np.complex64)
        line[:, start:start + length] = data
        position = (partition, row)
        if image.first_step is None:
            image.first_step = int(acq.idx.kspace_encode_step_1)
        image.in_order = image.in_order and position >= image.last_position
        image.last_position = position
        if position in image.line_sums:
            image.line_sums[position] += line
            image.line_counts[position] += 1
        else:
            image.line_sums[position] = line
            image.line_counts[position] = 1
            image.nbytes += line.nbytes
        if any(acq.is_flag_set(flag) for flag in _CALIBRATION_FLAGS):
            image.calibration.add(position)

    @staticmethod
    def _row(step: int, limits: tuple[int, int, int] | None, size: int, name: str) -> int:
        center = limits[2] if limits is not None else size // 2
        row = step - center + size // 2
        if not 0 <= row < size:
            raise ValueError(f"{name} = {step} lies outside the encoded matrix ({size} lines, "
                             f"center {center})")
        return row

    @property
    def last_whitening(self) -> torch.Tensor | None:
        """The prewhitening matrix ``[C, C]`` applied to the latest image (None when none was)."""
        return self._whitening

    def _whitening_matrix(self, dwell_us: float) -> torch.Tensor | None:
        if not self.prewhiten:
            return None
        if self._whitening is None or self._whitening_dwell_us != dwell_us:
            covariance = self.noise_covariance
            if covariance is None:
                return None
            scale = 1.0
            if self._noise and self._noise_dwell_us > 0 and dwell_us > 0:
                scale = math.sqrt(dwell_us / self._noise_dwell_us)
            self._whitening = prewhitening_matrix(covariance.to(torch.complex128), scale=scale)
            self._whitening_dwell_us = dwell_us
        return self._whitening

    def _close(self, key: tuple[int, int, int, int, int]) -> list[KSpaceSample]:
        image = self._open.pop(key)
        if not image.line_sums and not image.readouts:
            return []  # its only acquisition was rejected with an error
        sample = self._cartesian_sample(image) if image.line_sums else self._noncartesian_sample(image)
        whitening = self._whitening_matrix(float(image.head.sample_time_us))
        if whitening is not None:
            if whitening.shape[0] != sample.n_coils:
                raise ValueError(f"noise scans have {whitening.shape[0]} coils but slice {key[0]} data has "
                                 f"{sample.n_coils}")
            sample = replace(sample, kspace=prewhiten(sample.kspace, whitening.to(torch.complex64), coil_dim=0),
                             prewhitened=True)
        self.n_emitted += 1
        return [sample]

    def _common(self, image: _OpenImage) -> dict[str, Any]:
        slice_, contrast, repetition, set_, phase = _key(image.head)
        accel = self.info.acceleration
        return {
            "index": SampleIndex(slice=slice_, contrast=contrast, repetition=repetition, set=set_,
                                 phase=phase),
            "geometry": _geometry(image.head, self.info),
            "acceleration": (accel[0], accel[1]) if self.info.is_3d else (accel[0],),
            "reference_head": image.head,
        }

    def _cartesian_sample(self, image: _OpenImage) -> KSpaceSample:
        encoded_x, encoded_y, encoded_z = self.info.encoded_matrix
        grid = np.zeros((image.n_coils, encoded_z, encoded_y, encoded_x), dtype=np.complex64)
        lines = np.zeros((encoded_z, encoded_y), dtype=bool)
        calibration = np.zeros((encoded_z, encoded_y), dtype=bool)
        for (partition, row), total in image.line_sums.items():
            grid[:, partition, row] = total / image.line_counts[(partition, row)]
            lines[partition, row] = True
            calibration[partition, row] = (partition, row) in image.calibration
        kspace = remove_readout_oversampling(torch.from_numpy(grid),
                                              self.info.readout_length_after_oversampling)
        if encoded_z == 1:
            kspace, lines, calibration = kspace[:, 0], lines[0], calibration[0]
        recon_matrix = self.info.recon_matrix.image_shape(three_d=encoded_z > 1)
        return KSpaceSample(
            kspace=kspace.contiguous(),
            matrix=tuple(int(n) for n in kspace.shape[1:]),
            recon_matrix=recon_matrix,
            trajectory_type="cartesian",
            mask=torch.from_numpy(lines)[..., None],
            acs_mask=torch.from_numpy(calibration)[..., None] if calibration.any() else None,
            **self._common(image),
        )

    def _noncartesian_sample(self, image: _OpenImage) -> KSpaceSample:
        n_dims = 3 if self.info.is_3d else 2
        matrix = self.info.recon_matrix.image_shape(three_d=self.info.is_3d)
        stored = np.concatenate(image.trajectories, axis=0)  # [K, D], columns kx, ky[, kz]
        if stored.shape[1] < n_dims:
            raise ValueError(f"{n_dims}D encoding needs {n_dims} trajectory dimensions, acquisitions carry "
                             f"{stored.shape[1]}")
        ours = torch.from_numpy(np.ascontiguousarray(stored[:, :n_dims][:, ::-1].T))
        density = None
        if n_dims == 2 and stored.shape[1] == 3:
            density = torch.from_numpy(np.ascontiguousarray(stored[:, 2]))
        trajectory = to_radians(ours, matrix, self.trajectory_units, self.header)
        return KSpaceSample(
            kspace=torch.from_numpy(np.concatenate(image.readouts, axis=1)),
            matrix=matrix,
            recon_matrix=matrix,
            trajectory_type=self.trajectory_type,
            trajectory=trajectory.to(torch.float32),
            density=density,
            **self._common(image),
        )
