"""Write synthetic ISMRMRD HDF5 files (Cartesian, non-Cartesian) that ``ismrmrd_io`` and the C++ tools read.

Writers take k-space in our layout (``[S, C, (kz,) ky, kx]``, readout last; Cartesian either recon-size or,
with ``kspace_is_oversampled``, with the oversampled readout as acquired) and matrices/FOVs of the recon
space; trajectories are stored in radians/sample, per sample as (kx, ky[, kz]) as ISMRMRD does. Acquisitions
are written as one compound array, in the layout ``ismrmrd.Dataset`` and the C++ tools use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import ismrmrd
import numpy as np
import torch
from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype

from mrdserve.models.data.ismrmrd_header import build_header, header_to_xml
from mrdserve.models.data.sample import Geometry, SampleIndex

_INDEX_FIELDS = ("slice", "contrast", "repetition", "set", "phase")
_Entry = tuple[dict[str, Any], np.ndarray, np.ndarray]  # header fields, data [C, S], trajectory [S, D]
_NO_TRAJECTORY = np.zeros((0,), dtype=np.float32)
_NO_TRAJECTORY.flags.writeable = False


# ------------------------------------------------------------------------------------------------ shared
def _as_numpy_complex(values: Any, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if not np.iscomplexobj(array):
        raise TypeError(f"{name} must be complex, got {array.dtype}")
    return array.astype(np.complex64)


def _per_sample(values: Any, count: int, default: Callable[[int], Any], name: str) -> list[Any]:
    if values is None:
        return [default(i) for i in range(count)]
    if not isinstance(values, Sequence):
        return [values] * count
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries for {count} samples")
    return list(values)


def _set_head(head: np.ndarray, *, n_coils: int, n_samples: int, n_dims: int, center: int, dwell_us: float,
              flags: int, scan: int, geometry: Geometry | None = None, index: SampleIndex | None = None,
              e1: int = 0, e2: int = 0) -> None:
    head["version"] = 1
    head["flags"] = flags
    head["scan_counter"] = scan
    head["number_of_samples"] = n_samples
    head["available_channels"] = n_coils
    head["active_channels"] = n_coils
    head["center_sample"] = center
    head["trajectory_dimensions"] = n_dims
    head["sample_time_us"] = dwell_us
    head["channel_mask"][0] = (1 << min(n_coils, 64)) - 1 if n_coils < 64 else np.iinfo(np.uint64).max
    if geometry is not None:
        head["position"] = geometry.position
        head["read_dir"] = geometry.read_dir
        head["phase_dir"] = geometry.phase_dir
        head["slice_dir"] = geometry.slice_dir
        head["patient_table_position"] = geometry.patient_table_position
    head["idx"]["kspace_encode_step_1"] = e1
    head["idx"]["kspace_encode_step_2"] = e2
    if index is not None:
        for name in _INDEX_FIELDS:
            head["idx"][name] = getattr(index, name)


def _flag(*flags: int) -> int:
    value = 0
    for flag in flags:
        value |= 1 << (flag - 1)
    return value


def _noise_entries(noise: Any, n_coils: int, chunk: int, dwell_us: float) -> list[_Entry]:
    """Noise ``[C, N]`` as noise-measurement acquisitions of ``chunk`` samples each; none without noise."""
    if noise is None:
        return []
    array = _as_numpy_complex(noise, "noise")
    if array.ndim != 2 or array.shape[0] != n_coils:
        raise ValueError(f"noise must be [C={n_coils}, N], got shape {array.shape}")
    entries: list[_Entry] = []
    for start in range(0, array.shape[1], chunk):
        piece = array[:, start:start + chunk]
        fields = {"n_samples": piece.shape[1], "n_dims": 0, "center": 0, "dwell_us": dwell_us,
                  "flags": _flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)}
        entries.append((fields, piece, _NO_TRAJECTORY))
    return entries


def _write(path: str | Path, dataset: str, header: Any, entries: list[_Entry]) -> None:
    """The header and ``entries`` (the last flagged LAST_IN_MEASUREMENT) as one ISMRMRD dataset."""
    records = np.zeros(len(entries), dtype=acquisition_dtype)
    last = _flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    for i, (fields, data, traj) in enumerate(entries):
        head = np.zeros((), dtype=acquisition_header_dtype)
        fields = dict(fields)
        if i == len(entries) - 1:
            fields["flags"] = fields["flags"] | last
        _set_head(head, n_coils=data.shape[0], scan=i, **fields)
        records["head"][i] = head
        records["data"][i] = np.ascontiguousarray(data, dtype=np.complex64).view(np.float32).ravel()
        records["traj"][i] = np.ascontiguousarray(traj, dtype=np.float32).ravel()
    with h5py.File(path, "w") as f:
        group = f.create_group(dataset)
        xml = group.create_dataset("xml", shape=(1,), dtype=h5py.special_dtype(vlen=bytes))
        xml[0] = header_to_xml(header).encode("utf-8")
        group.create_dataset("data", data=records, maxshape=(None,), chunks=True)


def _limits_for(indices: list[SampleIndex]) -> dict[str, tuple[int, int, int]]:
    return {name: (0, max(getattr(i, name) for i in indices), 0) for name in _INDEX_FIELDS}


# ------------------------------------------------------------------------------------------------ Cartesian
def _cartesian_kspace(kspace: Any) -> np.ndarray:
    """k-space as complex64 ``[S, C, kz, ky, kx]`` (kz = 1 for 2D)."""
    array = _as_numpy_complex(kspace, "kspace")
    if array.ndim not in (4, 5):
        raise ValueError(f"kspace must be [S, C, ky, kx] or [S, C, kz, ky, kx], got shape {array.shape}")
    return array[:, :, None] if array.ndim == 4 else array


def _readout_oversampling(readout_oversampling: int, kspace_is_oversampled: bool, n_readout: int) -> int:
    """The readout oversampling factor, checked against the readout length when k-space already holds it."""
    if int(readout_oversampling) != readout_oversampling or readout_oversampling < 1:
        raise ValueError(f"readout_oversampling must be a positive integer, got {readout_oversampling}")
    oversampling = int(readout_oversampling)
    if kspace_is_oversampled and n_readout % oversampling:
        raise ValueError(f"kspace readout of {n_readout} samples is not a multiple of readout_oversampling "
                         f"= {oversampling} (kspace_is_oversampled=True)")
    return oversampling


def _line_mask(mask: Any, shape: tuple[int, int, int, int], kspace: np.ndarray, name: str) -> np.ndarray:
    """Bool ``[S, kz, ky]`` from a mask ``[(S,) (kz,) ky(, 1|kx)]``, or rows holding data when None."""
    n_samples, n_partitions, n_lines, n_readout = shape
    if mask is None:
        return np.abs(kspace).reshape(n_samples, -1, n_partitions, n_lines, n_readout).max(axis=(1, 4)) > 0
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    array = array.astype(bool)
    if array.ndim >= 2 and array.shape[-1] in (1, n_readout) and array.shape[-2] == n_lines:
        array = np.asarray(array.any(axis=-1))  # [(S,) (kz,) ky]: an array, not a NumPy scalar
    if array.ndim >= 1 and array.shape[-1] != n_lines:
        raise ValueError(f"{name} must be [(S,) (kz,) ky(, 1|kx)] with ky = {n_lines}, got {array.shape}")
    if n_partitions == 1 and array.ndim == 2:
        array = array[:, None]  # [S, ky] -> [S, 1, ky]
    try:
        return np.broadcast_to(array, (n_samples, n_partitions, n_lines)).copy()
    except ValueError as exc:
        raise ValueError(f"{name} of shape {array.shape} does not match k-space lines "
                         f"[S={n_samples}, kz={n_partitions}, ky={n_lines}]") from exc


def _sampled_and_calibration_lines(mask: Any, acs_mask: Any, kspace: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bool ``[S, kz, ky]`` of the rows to write and of the calibration rows among them."""
    n_samples, _, n_partitions, n_lines, n_readout = kspace.shape
    line_shape = (n_samples, n_partitions, n_lines, n_readout)
    lines = _line_mask(mask, line_shape, kspace, "mask")
    calibration = np.zeros_like(lines) if acs_mask is None else _line_mask(acs_mask, line_shape, kspace, "acs_mask")
    if np.any(calibration & ~lines):
        raise ValueError("acs_mask marks rows that mask leaves unsampled")
    return lines, calibration


def _recon_fov(fov_mm: Sequence[float] | None, geometries: list[Geometry]) -> tuple[float, ...]:
    fov = tuple(fov_mm) if fov_mm is not None else geometries[0].field_of_view
    if len(fov) != 3:
        raise ValueError(f"fov_mm must be (x, y, z), got {fov}")
    return fov


def _zero_pad_readout(kspace: np.ndarray, encoded_x: int) -> np.ndarray:
    """Recon-size k-space with its image zero-padded along x to the ``encoded_x`` samples of the readout."""
    n_readout = kspace.shape[-1]
    image = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(kspace, axes=-1), axis=-1, norm="ortho"), axes=-1)
    before = encoded_x // 2 - n_readout // 2
    image = np.pad(image, [(0, 0)] * 4 + [(before, encoded_x - n_readout - before)])
    return np.fft.fftshift(np.fft.fft(np.fft.ifftshift(image, axes=-1), axis=-1, norm="ortho"),
                           axes=-1).astype(np.complex64)


def _imaging_rows(rows: np.ndarray, calibration: np.ndarray, acceleration: int) -> np.ndarray:
    """Which calibration rows also lie on the regular undersampling lattice (..._AND_IMAGING)."""
    others = np.flatnonzero(rows & ~calibration)
    if acceleration <= 1 or others.size == 0 or np.any(np.diff(others) % acceleration):
        return calibration.copy()
    lattice = (np.arange(rows.size) % acceleration) == (others[0] % acceleration)
    return calibration & lattice


def _encoding_flags(positions: list[tuple[int, int]], n: int) -> list[int]:
    """FIRST/LAST_IN_SLICE and _ENCODE_STEP2 at a sample's first/last row, _ENCODE_STEP1 at each partition's."""
    partition = positions[n][0]
    flags = []
    if n == 0:
        flags += [ismrmrd.ACQ_FIRST_IN_SLICE, ismrmrd.ACQ_FIRST_IN_ENCODE_STEP2]
    if n == len(positions) - 1:
        flags += [ismrmrd.ACQ_LAST_IN_SLICE, ismrmrd.ACQ_LAST_IN_ENCODE_STEP2]
    if n == 0 or positions[n - 1][0] != partition:
        flags.append(ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1)
    if n == len(positions) - 1 or positions[n + 1][0] != partition:
        flags.append(ismrmrd.ACQ_LAST_IN_ENCODE_STEP1)
    return flags


def _cartesian_entries(kspace: np.ndarray, lines: np.ndarray, calibration: np.ndarray, acceleration: int, *,
                       dwell_us: float, geometry: Geometry, index: SampleIndex, number: int) -> list[_Entry]:
    """One sample's rows (``kspace`` ``[C, kz, ky, kx]``, masks ``[kz, ky]``), partition by partition."""
    n_partitions, encoded_x = lines.shape[0], kspace.shape[-1]
    imaging = np.stack([_imaging_rows(lines[p], calibration[p], acceleration) for p in range(n_partitions)])
    positions = [(p, int(r)) for p in range(n_partitions) for r in np.flatnonzero(lines[p])]
    if not positions:
        raise ValueError(f"mask selects no lines for sample {number}")
    entries: list[_Entry] = []
    for n, (p, r) in enumerate(positions):
        flags = _encoding_flags(positions, n)
        if calibration[p, r]:
            flags.append(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING if imaging[p, r]
                         else ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
        fields = {"n_samples": encoded_x, "n_dims": 0, "center": encoded_x // 2, "dwell_us": dwell_us,
                  "flags": _flag(*flags), "geometry": geometry, "index": index, "e1": r, "e2": p}
        entries.append((fields, kspace[:, p, r], _NO_TRAJECTORY))
    return entries


def write_ismrmrd_cartesian(
    path: str | Path,
    kspace: Any,
    mask: Any = None,
    acs_mask: Any = None,
    *,
    fov_mm: Sequence[float] | None = None,
    readout_oversampling: int = 1,
    kspace_is_oversampled: bool = False,
    noise: Any = None,
    geometry: Geometry | Sequence[Geometry] | None = None,
    indices: Sequence[SampleIndex] | None = None,
    acceleration: int | None = None,
    dwell_time_us: float = 5.0,
    noise_dwell_time_us: float | None = None,
    dataset: str = "dataset",
) -> Any:
    """Write Cartesian k-space ``[S, C, (kz,) ky, kx]`` as ISMRMRD acquisitions; return the header written.

    Rows where ``mask`` (``[(S,) (kz,) ky(, 1|kx)]``, default: rows holding data) is set become one
    acquisition each, flagged FIRST/LAST_IN_SLICE, ENCODE_STEP and, for ``acs_mask`` rows,
    PARALLEL_CALIBRATION (``_AND_IMAGING`` when the row lies on the R-lattice of the other lines).
    Readout oversampling (encoded FOV x = ``readout_oversampling`` x recon FOV x; the reader removes it):
    by default ``kspace`` is recon-size and the writer zero-pads the image along x; with
    ``kspace_is_oversampled=True`` its readout already holds the ``readout_oversampling`` x longer encoded
    readout (e.g. simulated or measured lines with their noise) and is stored as given.
    ``noise`` ``[C, N]`` is written first as noise-measurement acquisitions; ``fov_mm`` (x, y, z) is the
    recon FOV.
    """
    array = _cartesian_kspace(kspace)
    n_samples, n_coils, n_partitions, n_lines, n_readout = array.shape
    oversampling = _readout_oversampling(readout_oversampling, kspace_is_oversampled, n_readout)
    lines, calibration = _sampled_and_calibration_lines(mask, acs_mask, array)
    geometries = _per_sample(geometry, n_samples, lambda i: Geometry(), "geometry")
    index_list = _per_sample(indices, n_samples, lambda i: SampleIndex(slice=i), "indices")
    if acceleration is None:
        acceleration = max(1, round(lines[0].size / max(1, int(lines[0].sum()))))
    fov = _recon_fov(fov_mm, geometries)
    recon_x = n_readout // oversampling if kspace_is_oversampled else n_readout
    encoded_x = recon_x * oversampling
    header = build_header(
        matrix=(encoded_x, n_lines, n_partitions), recon_matrix=(recon_x, n_lines, n_partitions),
        fov_mm=(fov[0] * oversampling, fov[1], fov[2]), recon_fov_mm=fov, n_coils=n_coils,
        acceleration=(acceleration,), calibration_lines=int(calibration[0].sum()),
        encoding_limits=_limits_for(index_list))
    if oversampling > 1 and not kspace_is_oversampled:
        array = _zero_pad_readout(array, encoded_x)
    noise_dwell = dwell_time_us if noise_dwell_time_us is None else noise_dwell_time_us
    entries = _noise_entries(noise, n_coils, encoded_x, noise_dwell)
    for s in range(n_samples):
        entries += _cartesian_entries(array[s], lines[s], calibration[s], acceleration, dwell_us=dwell_time_us,
                                      geometry=geometries[s], index=index_list[s], number=s)
    _write(path, dataset, header, entries)
    return header


# ------------------------------------------------------------------------------------------------ non-Cartesian
def _noncartesian_trajectory(trajectory: Any, matrix: Sequence[int], n_samples: int, n_points: int) -> np.ndarray:
    """The trajectory as float32 ``[S, d, K]`` (d = len(matrix) in (2, 3)), in radians/sample within [-pi, pi]."""
    if isinstance(trajectory, torch.Tensor):
        trajectory = trajectory.detach().cpu().numpy()
    traj = np.asarray(trajectory).astype(np.float32)
    if traj.ndim == 2:
        traj = np.broadcast_to(traj, (n_samples, *traj.shape))
    n_dims = traj.shape[1] if traj.ndim == 3 else 0
    if traj.ndim != 3 or traj.shape[0] != n_samples or traj.shape[2] != n_points or n_dims not in (2, 3):
        raise ValueError(f"trajectory must be (d, K) or [S, d, K] with d in (2, 3) and K = {n_points}, "
                         f"got shape {tuple(np.shape(trajectory))}")
    if len(matrix) != n_dims:
        raise ValueError(f"matrix {tuple(matrix)} must have one size per trajectory row ({n_dims})")
    if np.abs(traj).max() > math.pi * (1 + 1e-6):
        raise ValueError("trajectory must be in radians/sample within [-pi, pi], "
                         f"max |k| = {np.abs(traj).max():.4g}")
    return traj


def _readout_layout(n_points: int, samples_per_readout: int, readouts_per_partition: int | None) -> tuple[int, int]:
    """(readouts per sample, readouts per partition) for ``K = n_points`` samples per image."""
    if samples_per_readout < 1 or n_points % samples_per_readout:
        raise ValueError(f"K = {n_points} is not a multiple of samples_per_readout = {samples_per_readout}")
    n_readouts = n_points // samples_per_readout
    per_partition = n_readouts if readouts_per_partition is None else int(readouts_per_partition)
    if per_partition < 1 or n_readouts % per_partition:
        raise ValueError(f"readouts_per_partition = {readouts_per_partition} does not divide the "
                         f"{n_readouts} readouts")
    return n_readouts, per_partition


def _readout_entries(data: np.ndarray, traj: np.ndarray, samples_per_readout: int, per_partition: int, *,
                     dwell_us: float, geometry: Geometry, index: SampleIndex) -> list[_Entry]:
    """One sample's readouts (``data`` ``[C, K]``, ``traj`` ``[d, K]`` in rows (ky, kx) / (kz, ky, kx))."""
    n_readouts = data.shape[1] // samples_per_readout
    entries: list[_Entry] = []
    for r in range(n_readouts):
        part = slice(r * samples_per_readout, (r + 1) * samples_per_readout)
        stored = traj[::-1, part].T  # [samples, (kx, ky[, kz])]
        flags = []
        if r == 0:
            flags.append(ismrmrd.ACQ_FIRST_IN_SLICE)
        if r == n_readouts - 1:
            flags.append(ismrmrd.ACQ_LAST_IN_SLICE)
        center = int(np.argmin(np.square(stored).sum(axis=1)))
        fields = {"n_samples": samples_per_readout, "n_dims": traj.shape[0], "center": center,
                  "dwell_us": dwell_us, "flags": _flag(*flags), "geometry": geometry, "index": index,
                  "e1": r % per_partition, "e2": r // per_partition}
        entries.append((fields, data[:, part], stored))
    return entries


def write_ismrmrd_noncartesian(
    path: str | Path,
    data: Any,
    trajectory: Any,
    samples_per_readout: int,
    *,
    matrix: Sequence[int],
    trajectory_type: str = "radial",
    trajectory_identifier: str | None = None,
    readouts_per_partition: int | None = None,
    fov_mm: Sequence[float] | None = None,
    noise: Any = None,
    geometry: Geometry | Sequence[Geometry] | None = None,
    indices: Sequence[SampleIndex] | None = None,
    acceleration: int = 1,
    dwell_time_us: float = 5.0,
    dataset: str = "dataset",
) -> Any:
    """Write non-Cartesian ``data`` ``[S, C, K]`` with ``trajectory`` ``(d, K)`` or ``[S, d, K]``.

    Returns the header written.

    The trajectory is in our convention (radians/sample, rows (ky, kx) / (kz, ky, kx)); it is stored per
    sample as (kx, ky[, kz]) in radians with a ``trajectory_units`` userParameter saying so. Each
    ``samples_per_readout`` consecutive samples form one acquisition. ``matrix`` is (ny, nx) or (nz, ny, nx);
    a 3D matrix gives an encoded z > 1, so readers treat the data as one volume. ``trajectory_type`` is an
    ISMRMRD trajectory type ("radial", "spiral", "other"...), ``trajectory_identifier`` names the pattern in
    the trajectoryDescription (e.g. "stack-of-stars"). ``readouts_per_partition`` (stacks, partition-major
    order) numbers readouts within each partition (encode step 1) and the partition (encode step 2);
    otherwise readout r has encode step 1 = r.
    """
    array = _as_numpy_complex(data, "data")
    if array.ndim != 3:
        raise ValueError(f"data must be [S, C, K], got shape {array.shape}")
    n_samples, n_coils, n_points = array.shape
    traj = _noncartesian_trajectory(trajectory, matrix, n_samples, n_points)
    n_readouts, per_partition = _readout_layout(n_points, samples_per_readout, readouts_per_partition)
    geometries = _per_sample(geometry, n_samples, lambda i: Geometry(), "geometry")
    index_list = _per_sample(indices, n_samples, lambda i: SampleIndex(slice=i), "indices")
    sizes = (1, *matrix) if len(matrix) == 2 else tuple(matrix)
    fov = tuple(fov_mm) if fov_mm is not None else geometries[0].field_of_view
    limits = _limits_for(index_list)
    limits["kspace_encoding_step_1"] = (0, per_partition - 1, 0)
    if readouts_per_partition is not None:
        n_partitions = n_readouts // per_partition
        limits["kspace_encoding_step_2"] = (0, n_partitions - 1, n_partitions // 2)
    header = build_header(
        matrix=(sizes[2], sizes[1], sizes[0]), fov_mm=fov, n_coils=n_coils, trajectory=trajectory_type,
        acceleration=(acceleration,), encoding_limits=limits, trajectory_units="radians",
        trajectory_identifier=trajectory_identifier)
    entries = _noise_entries(noise, n_coils, samples_per_readout, dwell_time_us)
    for s in range(n_samples):
        entries += _readout_entries(array[s], traj[s], samples_per_readout, per_partition, dwell_us=dwell_time_us,
                                    geometry=geometries[s], index=index_list[s])
    _write(path, dataset, header, entries)
    return header
