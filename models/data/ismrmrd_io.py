"""Read ISMRMRD HDF5 files into ``KSpaceSample`` images (Cartesian, non-Cartesian); writers: ``ismrmrd_write``.

Reading goes through the same ``AcquisitionAssembler`` as live streams. Acquisitions are read in chunks of
HDF5 compound records (``READ_CHUNK_RECORDS``), each checked against its own header.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import ismrmrd
import numpy as np
from ismrmrd.hdf5 import acquisition_header_dtype

from mrdserve.models.data.acquisitions import AcquisitionAssembler
from mrdserve.models.data.input_errors import InputError
from mrdserve.models.data.ismrmrd_header import parse_header
from mrdserve.models.data.ismrmrd_inspect import HDF5_ERRORS, READ_CHUNK_RECORDS, check_data_dataset, unreadable
from mrdserve.models.data.sample import KSpaceSample


def read_acquisitions(path: str | Path, dataset: str = "dataset") -> tuple[str, list[Any]]:
    """The XML header and every ``ismrmrd.Acquisition`` of a file; clear errors for unreadable files."""
    with _open_dataset(path, dataset) as (xml, acquisitions):
        return xml, list(acquisitions)


def _header_text(f: h5py.File, name: str, dataset: str) -> str:
    """The XML header of ``dataset`` in an open file; ``InputError`` naming what is missing."""
    if dataset not in f or not isinstance(f[dataset], h5py.Group):
        raise InputError(f"{name} has no ISMRMRD dataset group {dataset!r} (top-level: {sorted(f)[:20]})",
                         "no_ismrmrd_dataset")
    group = f[dataset]
    if "xml" not in group or not isinstance(group["xml"], h5py.Dataset) or group["xml"].size < 1:
        raise InputError(f"{name}: dataset {dataset!r} has no 'xml' header", "no_ismrmrd_header")
    xml = group["xml"][0]
    if isinstance(xml, bytes):
        xml = xml.decode("utf-8", errors="replace")
    if not isinstance(xml, str):
        raise InputError(f"{name}: the 'xml' dataset does not hold a string", "bad_header_dataset")
    return xml


@contextlib.contextmanager
def _open_file(path: str | Path) -> Iterator[h5py.File]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ISMRMRD file not found: {path}")
    try:
        handle = h5py.File(path, "r")
    except HDF5_ERRORS as exc:
        raise unreadable(exc) from exc
    with handle as f:
        yield f


@contextlib.contextmanager
def _open_dataset(path: str | Path, dataset: str) -> Iterator[tuple[str, Any]]:
    """``(xml, acquisitions)`` of an open file; the acquisitions are read lazily, in chunks."""
    with _open_file(path) as f:
        try:
            xml = _header_text(f, Path(path).name, dataset)
            records = check_data_dataset(f[dataset])
        except InputError:
            raise
        except HDF5_ERRORS as exc:
            raise unreadable(exc) from exc
        yield xml, _acquisitions(records)


def _acquisitions(records: h5py.Dataset) -> Iterator[Any]:
    """Every acquisition of an ISMRMRD ``data`` dataset, read in chunks, each checked against its header."""
    for start in range(0, records.shape[0], READ_CHUNK_RECORDS):
        try:
            chunk = records[start:start + READ_CHUNK_RECORDS]
        except HDF5_ERRORS as exc:
            raise unreadable(exc) from exc
        heads = np.asarray(chunk["head"]).astype(acquisition_header_dtype)
        for offset in range(chunk.size):
            i = start + offset
            head = ismrmrd.AcquisitionHeader.from_buffer_copy(heads[offset].tobytes())
            n_coils, n_samples, n_dims = head.active_channels, head.number_of_samples, head.trajectory_dimensions
            raw = np.asarray(chunk[offset]["data"], dtype=np.float32)
            if raw.size != 2 * n_coils * n_samples:
                raise InputError(f"acquisition {i} holds {raw.size // 2} complex values, its header "
                                 f"says {n_coils} channels x {n_samples} samples", "inconsistent_data")
            stored_traj = np.asarray(chunk[offset]["traj"], dtype=np.float32)
            if stored_traj.size != n_samples * n_dims:
                raise InputError(f"acquisition {i} holds {stored_traj.size} trajectory values, its "
                                 f"header says {n_samples} samples x {n_dims} dimensions", "inconsistent_data")
            data = raw.view(np.complex64).reshape(n_coils, n_samples).copy()
            yield ismrmrd.Acquisition(head, data, stored_traj.reshape(n_samples, n_dims).copy())
        del chunk, heads


def read_ismrmrd(path: str | Path, dataset: str = "dataset", trajectory_units: str | None = None,
                 prewhiten: bool = True, header: Any = None) -> tuple[Any, list[KSpaceSample]]:
    """The parsed header and every image (``KSpaceSample``) of an ISMRMRD file, in acquisition order.

    ``header``: the file's header already parsed by the caller (parsing the XML costs ~10 ms), else read here.
    Acquisitions are read in chunks and assembled as they come, so only the assembled k-space stays in memory.
    """
    samples: list[KSpaceSample] = []
    with _open_dataset(path, dataset) as (xml, acquisitions):
        assembler = AcquisitionAssembler(xml if header is None else header, trajectory_units, prewhiten=prewhiten)
        for acq in acquisitions:
            samples.extend(assembler.add(acq))
    samples.extend(assembler.finish())
    return assembler.header, samples


def header_from_file(path: str | Path, dataset: str = "dataset") -> Any:
    """Just the parsed header of an ISMRMRD file (acquisitions are not read)."""
    with _open_file(path) as f:
        try:
            xml = _header_text(f, Path(path).name, dataset)
        except InputError:
            raise
        except HDF5_ERRORS as exc:
            raise unreadable(exc) from exc
    return parse_header(xml)
