"""What an ISMRMRD HDF5 file declares, checked before any k-space is assembled.

``inspect_ismrmrd`` opens the file, checks that the ``xml`` and ``data`` datasets have the ISMRMRD types, bounds
the header's size (from its on-disk length) and the record count (from the dataset's shape) before reading them,
then scans the acquisition headers in chunks of ``READ_CHUNK_RECORDS`` for the sizes the data will need. HDF5
reads a chunk's samples even when only the header field is asked for, so the scan holds one chunk's samples at
a time (run it where memory is bounded: ``service.bounded_read``).
Admission (``service.admission``) compares the sizes with the configured budget before any image is assembled,
so a hostile file (a billion records, a gigabyte header, a 100000 x 100000 matrix) costs almost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import ismrmrd
import numpy as np
from ismrmrd.hdf5 import acquisition_header_dtype

from mrdserve.models.data.input_errors import InputError, LimitError
from mrdserve.models.data.ismrmrd_header import parse_header

READ_CHUNK_RECORDS = 1024  # acquisitions per HDF5 read (it reads their samples even for the header field alone)
DEFAULT_MAX_HEADER_BYTES = 16 * 1024**2
_NOISE_BIT = np.uint64(1) << np.uint64(ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1)
_IMAGE_KEYS = ("slice", "contrast", "repetition", "set", "phase")
_VLEN_DISK_LENGTH_BYTES = 4  # an HDF5 variable-length element on disk: uint32 length, then a global heap id
# what h5py raises for a corrupt file besides OSError (a damaged object header, link table or datatype message)
HDF5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError, OverflowError)


@dataclass(frozen=True)
class Declaration:
    """Sizes an ISMRMRD file declares (from its header and acquisition headers); nothing here was read as data."""

    header: Any  # the parsed ismrmrdHeader
    file_bytes: int
    header_bytes: int
    records: int
    noise_records: int
    payload_bytes: int  # data + trajectory of every acquisition, as their headers declare
    max_channels: int
    max_samples: int
    images: int  # distinct (slice, contrast, repetition, set, phase) among the data acquisitions
    max_slice_index: int


def inspect_ismrmrd(path: str | Path, dataset: str = "dataset", *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                    max_records: int | None = None) -> Declaration:
    """The ``Declaration`` of an ISMRMRD file; ``InputError`` naming what is wrong (``LimitError`` for sizes)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ISMRMRD file not found: {path.name}", "not_found")
    if not h5py.is_hdf5(path):
        raise InputError("the file is not HDF5; send an ISMRMRD HDF5 file (.h5)", "not_hdf5")
    try:
        with h5py.File(path, "r") as f:
            if dataset not in f or not isinstance(f[dataset], h5py.Group):
                groups = sorted(name for name in f if isinstance(f[name], h5py.Group))[:20]
                raise InputError(f"the HDF5 file has no ISMRMRD dataset group {dataset!r} (top-level groups: "
                                 f"{groups}); choose one with ?group=", "no_ismrmrd_dataset")
            group = f[dataset]
            xml, header_bytes = _read_xml(path, group, max_header_bytes)
            header = parse_header(xml)
            scan = _scan_acquisitions(group, max_records)
    except InputError:
        raise
    except HDF5_ERRORS as error:
        raise unreadable(error) from None
    return Declaration(header=header, file_bytes=path.stat().st_size, header_bytes=header_bytes, **scan)


def unreadable(error: Exception) -> InputError:
    """The input error for a file h5py cannot read: its reason without file paths or data."""
    reason = str(error).strip("'\"").split("(")[0].strip()[:200] or type(error).__name__
    return InputError(f"the file is not a readable HDF5 file (truncated or corrupt): {reason}", "unreadable_hdf5")


# ------------------------------------------------------------------------------------------------ header
def _read_xml(path: Path, group: h5py.Group, max_header_bytes: int) -> tuple[str, int]:
    """The header text, its size checked (from the dataset's type or its on-disk length) before it is read."""
    if "xml" not in group:
        raise InputError("the ISMRMRD group has no header ('xml' dataset); is this an ISMRMRD file?",
                         "no_ismrmrd_header")
    xml = group["xml"]
    if not isinstance(xml, h5py.Dataset):
        raise InputError("the ISMRMRD 'xml' entry must be a dataset holding the header text", "bad_header_dataset")
    string_info = h5py.check_string_dtype(xml.dtype)
    if string_info is None and xml.dtype.kind != "S":
        raise InputError(f"the ISMRMRD 'xml' dataset must hold the header as a string, it holds {xml.dtype}",
                         "bad_header_dataset")
    if xml.size < 1:
        raise InputError("the ISMRMRD 'xml' dataset is empty", "bad_header_dataset")
    declared = xml.dtype.itemsize if string_info is not None and string_info.length is not None else \
        _vlen_length_on_disk(path, xml)
    if declared is not None and declared > max_header_bytes:
        raise LimitError(f"the ISMRMRD header is {declared} bytes, beyond the limit of {max_header_bytes} bytes")
    value = xml[0] if xml.ndim else xml[()]
    if isinstance(value, np.ndarray) or not isinstance(value, bytes | str):
        raise InputError("the ISMRMRD 'xml' dataset must hold one header string", "bad_header_dataset")
    size = len(value)
    if size > max_header_bytes:
        raise LimitError(f"the ISMRMRD header is {size} bytes, beyond the limit of {max_header_bytes} bytes")
    if size == 0:
        raise InputError("the ISMRMRD header ('xml' dataset) is empty", "invalid_ismrmrd_header")
    return (value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value), size


def _vlen_length_on_disk(path: Path, xml: h5py.Dataset) -> int | None:
    """The byte length of a variable-length string's first element, read from its 4-byte on-disk prefix.

    Works for the contiguous and unfiltered chunked layouts that the ISMRMRD writers use; None otherwise.
    """
    try:
        offset = xml.id.get_offset()
        if offset is not None:
            with open(path, "rb") as raw:
                raw.seek(offset)
                prefix = raw.read(_VLEN_DISK_LENGTH_BYTES)
        elif xml.chunks is not None and not xml.compression and xml.ndim == 1:
            prefix = xml.id.read_direct_chunk((0,))[1][:_VLEN_DISK_LENGTH_BYTES]
        else:
            return None
    except (OSError, ValueError, TypeError, RuntimeError):
        return None
    return int.from_bytes(prefix, "little") if len(prefix) == _VLEN_DISK_LENGTH_BYTES else None


# ------------------------------------------------------------------------------------------------ data
def check_data_dataset(group: h5py.Group) -> h5py.Dataset:
    """The ``data`` dataset of an ISMRMRD group, checked to be the acquisition compound type."""
    if "data" not in group:
        raise InputError("the ISMRMRD dataset holds a header but no acquisitions ('data' dataset)", "no_data")
    data = group["data"]
    if not isinstance(data, h5py.Dataset) or data.ndim != 1:
        raise InputError("the ISMRMRD 'data' entry must be a one-dimensional dataset of acquisitions",
                         "bad_data_dataset")
    names = data.dtype.names or ()
    if not {"head", "traj", "data"} <= set(names):
        raise InputError(f"the ISMRMRD 'data' dataset is not of the acquisition type (fields head, traj, data; "
                         f"it has {list(names)[:10]})", "bad_data_dataset")
    head = data.dtype["head"]
    if head.names is None or set(head.names) != set(acquisition_header_dtype.names):
        raise InputError("the 'head' field of the ISMRMRD 'data' dataset is not the ISMRMRD acquisition header",
                         "bad_data_dataset")
    for name in ("traj", "data"):
        base = h5py.check_vlen_dtype(data.dtype[name])
        if base is None or base != np.float32:
            raise InputError(f"the {name!r} field of the ISMRMRD 'data' dataset must be variable-length float32",
                             "bad_data_dataset")
    if data.size == 0:
        raise InputError("the ISMRMRD dataset holds a header but no acquisitions", "no_data")
    return data


def _scan_acquisitions(group: h5py.Group, max_records: int | None) -> dict[str, Any]:
    data = check_data_dataset(group)
    records = int(data.shape[0])
    if max_records is not None and records > max_records:
        raise LimitError(f"the file holds {records} acquisitions, beyond the limit of {max_records} for this "
                         f"request's memory budget")
    noise = payload = max_channels = max_samples = 0
    max_slice = 0
    images: set[tuple[int, ...]] = set()
    for start in range(0, records, READ_CHUNK_RECORDS):
        heads = data.fields("head")[start:start + READ_CHUNK_RECORDS]
        channels = heads["active_channels"].astype(np.int64)
        samples = heads["number_of_samples"].astype(np.int64)
        dims = heads["trajectory_dimensions"].astype(np.int64)
        payload += int((channels * samples * 8 + samples * dims * 4).sum())
        is_noise = (heads["flags"].astype(np.uint64) & _NOISE_BIT) != 0
        noise += int(is_noise.sum())
        max_channels = max(max_channels, int(channels.max()))
        max_samples = max(max_samples, int(samples.max()))
        empty = np.flatnonzero(~is_noise & ((channels == 0) | (samples == 0)))
        if empty.size:
            raise InputError(f"acquisition {start + int(empty[0])} declares no samples (active_channels "
                             f"{int(channels[empty[0]])}, number_of_samples {int(samples[empty[0]])})",
                             "inconsistent_data")
        keys = np.stack([heads["idx"][name][~is_noise].astype(np.int64) for name in _IMAGE_KEYS], axis=1)
        if keys.size:
            max_slice = max(max_slice, int(keys[:, 0].max()))
            images.update(map(tuple, np.unique(keys, axis=0).tolist()))
    return {"records": records, "noise_records": noise, "payload_bytes": payload,
            "max_channels": max_channels,
            "max_samples": max_samples, "images": len(images), "max_slice_index": max_slice}
