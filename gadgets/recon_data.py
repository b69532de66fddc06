"""Gadgetron's ReconData message (id 1023, what BucketToBuffer sends) read with size limits, and turned back
into ``ismrmrd.Acquisition`` objects so that the same ingest (``AcquisitionAssembler``) serves both input forms.

Wire format (little-endian; arrays are hoNDArrays: uint64 rank, uint64 dims, then the data in Fortran order):
``uint64 n_bits``, then per bit a buffer and an optional (bool-prefixed) reference buffer. A buffer is
``data`` complex64 ``[E0, E1, E2, CHA, N, S, LOC]``, optional ``trajectory`` float32 ``[D, E0, E1, E2, N, S, LOC]``,
optional ``density`` float32, ``headers`` (dims ``[E1, E2, N, S, LOC]`` then one AcquisitionHeader each; lines
that were not acquired keep a zeroed header) and a 56-byte ``SamplingDescription``.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Generator
from dataclasses import dataclass

import ismrmrd
import numpy as np
from ismrmrd.acquisition import AcquisitionHeader

from mrdserve.service.mrd.protocol import Limits, ProtocolError, check_size

_U64 = struct.Struct("<Q")
_BOOL = struct.Struct("<?")
MAX_RANK = 16
MAX_BITS = 4096
_HEADER_SIZE = ctypes.sizeof(AcquisitionHeader)


class SamplingLimit(ctypes.Structure):
    _fields_ = [("min", ctypes.c_uint16), ("center", ctypes.c_uint16), ("max", ctypes.c_uint16)]


class SamplingDescription(ctypes.Structure):
    """Gadgetron's ``SamplingDescription`` as it travels (C layout, 56 bytes with padding)."""

    _fields_ = [("encoded_FOV", ctypes.c_float * 3), ("recon_FOV", ctypes.c_float * 3),
                ("encoded_matrix", ctypes.c_uint16 * 3), ("recon_matrix", ctypes.c_uint16 * 3),
                ("sampling_limits", SamplingLimit * 3)]


@dataclass
class ReconBuffer:
    data: np.ndarray  # complex64 [E0, E1, E2, CHA, N, S, LOC]
    trajectory: np.ndarray | None  # float32 [D, E0, E1, E2, N, S, LOC]
    density: np.ndarray | None
    headers: np.ndarray  # object array [E1, E2, N, S, LOC] of AcquisitionHeader
    sampling: SamplingDescription


@dataclass
class ReconBit:
    data: ReconBuffer
    reference: ReconBuffer | None = None


@dataclass
class ReconData:
    bits: list[ReconBit]


Parser = Generator[int, bytes, object]


class _Budget:
    """Bytes still allowed in this one message (the whole message stays within ``max_payload_bytes``)."""

    def __init__(self, limits: Limits) -> None:
        self.limit = limits.max_payload_bytes
        self.left = limits.max_payload_bytes

    def take(self, what: str, size: int) -> int:
        check_size(what, size, self.left)
        self.left -= size
        return size


def _dims(what: str, budget: _Budget) -> Generator[int, bytes, tuple[int, ...]]:
    rank = _U64.unpack((yield _U64.size))[0]
    if rank > MAX_RANK:
        raise ProtocolError(f"ReconData {what} has rank {rank} (at most {MAX_RANK} accepted)")
    budget.take(f"ReconData {what} dimensions", 8 * rank)
    return struct.unpack(f"<{rank}Q", (yield 8 * rank)) if rank else ()


def _count(dims: tuple[int, ...]) -> int:
    count = 1 if dims else 0
    for dim in dims:
        count *= dim
        if count > 1 << 62:
            break
    return count


def _array(what: str, dtype: type, budget: _Budget) -> Generator[int, bytes, np.ndarray]:
    dims = yield from _dims(what, budget)
    size = budget.take(f"ReconData {what}", _count(dims) * np.dtype(dtype).itemsize)
    payload = (yield size) if size else b""
    return np.frombuffer(payload, dtype=dtype).reshape(dims or (0,), order="F")


def _optional_array(what: str, dtype: type, budget: _Budget) -> Generator[int, bytes, np.ndarray | None]:
    present = _BOOL.unpack((yield _BOOL.size))[0]
    return (yield from _array(what, dtype, budget)) if present else None


def _buffer(budget: _Budget) -> Generator[int, bytes, ReconBuffer]:
    data = yield from _array("data", np.complex64, budget)
    trajectory = yield from _optional_array("trajectory", np.float32, budget)
    density = yield from _optional_array("density", np.float32, budget)
    dims = yield from _dims("headers", budget)
    count = _count(dims)
    raw = (yield budget.take("ReconData headers", count * _HEADER_SIZE)) if count else b""
    heads = np.empty(count, dtype=object)
    for i in range(count):
        heads[i] = AcquisitionHeader.from_buffer_copy(raw[i * _HEADER_SIZE:(i + 1) * _HEADER_SIZE])
    sampling = SamplingDescription.from_buffer_copy((yield ctypes.sizeof(SamplingDescription)))
    if data.ndim != 7:
        raise ProtocolError(f"ReconData data must have 7 dimensions [E0, E1, E2, CHA, N, S, LOC], got "
                            f"shape {data.shape}")
    headers = heads.reshape(dims or (0,), order="F")
    if headers.shape != data.shape[1:3] + data.shape[4:]:
        raise ProtocolError(f"ReconData headers of shape {headers.shape} do not match data of shape {data.shape}")
    if trajectory is not None and (trajectory.ndim != 7 or trajectory.shape[1:] != data.shape[:3] + data.shape[4:]):
        raise ProtocolError(f"ReconData trajectory of shape {trajectory.shape} does not match data of shape "
                            f"{data.shape}")
    return ReconBuffer(data, trajectory, density, headers, sampling)


def recon_data_parser(limits: Limits) -> Parser:
    """Parse the body of a ReconData message (after its id); plugs into ``protocol.read_message*``."""
    budget = _Budget(limits)
    n_bits = _U64.unpack((yield _U64.size))[0]
    if n_bits > MAX_BITS:
        raise ProtocolError(f"ReconData with {n_bits} bits (at most {MAX_BITS} accepted)")
    bits = []
    for _ in range(n_bits):
        data = yield from _buffer(budget)
        has_reference = _BOOL.unpack((yield _BOOL.size))[0]
        bits.append(ReconBit(data, (yield from _buffer(budget)) if has_reference else None))
    return ReconData(bits)


# -- back to acquisitions ----------------------------------------------------------------------------------------

def _buffer_acquisitions(buffer: ReconBuffer, skip: set[tuple[int, ...]] | None = None
                         ) -> dict[tuple[int, ...], ismrmrd.Acquisition]:
    """The acquired lines of one buffer (non-zero ``number_of_samples`` in their header), keyed by their slot."""
    n_e0 = buffer.data.shape[0]
    found: dict[tuple[int, ...], ismrmrd.Acquisition] = {}
    for slot in np.ndindex(*buffer.headers.shape):
        head = buffer.headers[slot]
        if head.number_of_samples == 0 or (skip is not None and _place(head) in skip):
            continue
        e1, e2, n, s, loc = slot
        line = np.ascontiguousarray(buffer.data[:, e1, e2, :, n, s, loc].T)  # [CHA, E0]
        head = AcquisitionHeader.from_buffer_copy(bytes(head))
        if head.number_of_samples != n_e0:  # BucketToBuffer centred a shorter readout in E0
            head.center_sample = n_e0 // 2
            head.discard_pre = head.discard_post = 0
        head.number_of_samples = n_e0
        head.active_channels = line.shape[0]
        traj = None
        if buffer.trajectory is not None:
            traj = np.ascontiguousarray(buffer.trajectory[:, :, e1, e2, n, s, loc].T)  # [E0, D]
            head.trajectory_dimensions = traj.shape[1]
        else:
            head.trajectory_dimensions = 0
        head.flags &= ~(1 << (ismrmrd.ACQ_LAST_IN_SLICE - 1))  # the whole bit is flushed at once
        found[_place(head)] = ismrmrd.Acquisition(head, line, traj)
    return found


def _place(head: AcquisitionHeader) -> tuple[int, ...]:
    idx = head.idx
    return (idx.slice, idx.contrast, idx.repetition, idx.set, idx.phase, idx.average, idx.segment,
            idx.kspace_encode_step_2, idx.kspace_encode_step_1)


def bit_to_acquisitions(bit: ReconBit) -> list[ismrmrd.Acquisition]:
    """The acquisitions one ReconData bit holds: its data lines plus reference (ACS) lines not already among
    them, ordered by image and (e2, e1) as a scanner would send them."""
    lines = _buffer_acquisitions(bit.data)
    if bit.reference is not None:
        lines.update(_buffer_acquisitions(bit.reference, skip=set(lines)))
    return [lines[place] for place in sorted(lines)]
