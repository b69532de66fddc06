"""Gadgetron's side of the external-language protocol, for tests: a loopback peer that sends CONFIG, HEADER, data
and CLOSE and collects what comes back; simulated inputs; and a ReconData encoder that builds buffers the way
Gadgetron's BucketToBuffer does (format from gadgetron's types/recon_data.py and external/writers.py)."""

from __future__ import annotations

import ctypes
import socket
import struct
from pathlib import Path

import ismrmrd
import numpy as np
import torch
from ismrmrd.acquisition import AcquisitionHeader

from mrdserve.gadgets.recon_data import SamplingDescription
from mrdserve.models.data.acquisitions import remove_readout_oversampling
from mrdserve.models.data.ismrmrd_header import encoding_info
from mrdserve.models.data.ismrmrd_io import read_acquisitions
from mrdserve.models.data.simulate import simulate_to_file
from mrdserve.service.mrd.protocol import (
    Limits,
    Message,
    MessageId,
    encode_close,
    encode_object,
    encode_text,
    read_message_blocking,
)

TIMEOUT_S = 60.0
_U64, _BOOL, _ID = struct.Struct("<Q"), struct.Struct("<?"), struct.Struct("<H")


def simulated(tmp: Path, trajectory: str, slices: int, noise_scan: bool = True, seed: int = 0):
    """(header XML, acquisitions) of a simulated 96x96, 8-coil, R=4 file."""
    path = tmp / f"{trajectory}-{slices}-{noise_scan}-{seed}.h5"
    simulate_to_file(path, trajectory, coils=8, acceleration=4, matrix=96, slices=slices, noise=0.01, seed=seed,
                     noise_scan=noise_scan)
    return read_acquisitions(path)


def config_text(**properties: str) -> str:
    body = "".join(f'<property name="{k}" value="{v}"/>' for k, v in properties.items())
    return f'<?xml version="1.0"?>\n<configuration>{body}</configuration>\n'


def stream_bytes(config: str, header: str, items: list, close: bool = True) -> bytes:
    """CONFIG, HEADER, each item (ISMRMRD objects, or raw message bytes), then CLOSE."""
    out = [encode_text(config, MessageId.CONFIG_TEXT), encode_text(header, MessageId.HEADER)]
    out += [item if isinstance(item, bytes) else encode_object(item) for item in items]
    if close:
        out.append(encode_close())
    return b"".join(out)


def collect(sock: socket.socket, payload: bytes) -> list[Message]:
    """Send ``payload`` and read every message back until CLOSE (or the peer closing)."""
    sock.settimeout(TIMEOUT_S)
    sock.sendall(payload)
    reader = sock.makefile("rb")
    messages = []
    while True:
        message = read_message_blocking(reader.read, Limits())
        messages.append(message)
        if message.id == MessageId.CLOSE:
            return messages


class GadgetronPort:
    """Gadgetron's listening side of ``<execute>``: the gadget connects back to ``.port``."""

    def __init__(self) -> None:
        self.server = socket.create_server(("localhost", 0))
        self.server.settimeout(TIMEOUT_S)
        self.port = self.server.getsockname()[1]

    def accept(self) -> socket.socket:
        sock, _ = self.server.accept()
        return sock

    def close(self) -> None:
        self.server.close()


# -- ReconData, the way BucketToBuffer builds it -----------------------------------------------------------------

def without_readout_oversampling(acquisitions: list, header: str) -> list:
    """What Gadgetron's RemoveROOversampling does to Cartesian readouts (header left unchanged)."""
    length = encoding_info(header).readout_length_after_oversampling
    out = []
    for acq in acquisitions:
        if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) or acq.number_of_samples == length:
            out.append(acq)
            continue
        data = remove_readout_oversampling(torch.from_numpy(np.array(acq.data)), length).numpy()
        head = AcquisitionHeader.from_buffer_copy(bytes(acq.getHead()))
        head.number_of_samples = length
        head.center_sample = acq.center_sample * length // acq.number_of_samples
        out.append(ismrmrd.Acquisition(head, data.astype(np.complex64)))
    return out


def _array_bytes(array: np.ndarray, dtype) -> bytes:
    dims = array.shape
    return (_U64.pack(len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
            + np.asarray(array, dtype=dtype).tobytes(order="F"))


def _buffer_bytes(data: np.ndarray, trajectory: np.ndarray | None, headers: list, header_dims: tuple) -> bytes:
    out = _array_bytes(data, np.complex64)
    out += _BOOL.pack(trajectory is not None) + (_array_bytes(trajectory, np.float32) if trajectory is not None
                                                 else b"")
    out += _BOOL.pack(False)  # no density
    out += _U64.pack(len(header_dims)) + struct.pack(f"<{len(header_dims)}Q", *header_dims)
    out += b"".join(bytes(h) for h in headers)
    return out + bytes(SamplingDescription())


def _buffer(acquisitions: list, n_e1: int) -> bytes:
    """One buffer [E0, E1, 1, CHA, 1, 1, 1] with lines at kspace_encode_step_1, zero headers elsewhere."""
    first = acquisitions[0]
    n_e0, n_cha, n_traj = first.number_of_samples, first.active_channels, first.trajectory_dimensions
    data = np.zeros((n_e0, n_e1, 1, n_cha, 1, 1, 1), dtype=np.complex64)
    trajectory = np.zeros((n_traj, n_e0, n_e1, 1, 1, 1, 1), dtype=np.float32) if n_traj else None
    headers = [AcquisitionHeader() for _ in range(n_e1)]  # F-order over [E1, 1, 1, 1, 1]
    for acq in acquisitions:
        e1 = acq.idx.kspace_encode_step_1
        data[:, e1, 0, :, 0, 0, 0] = np.asarray(acq.data).T
        if trajectory is not None:
            trajectory[:, :, e1, 0, 0, 0, 0] = np.asarray(acq.traj).T
        headers[e1] = AcquisitionHeader.from_buffer_copy(bytes(acq.getHead()))
    return _buffer_bytes(data, trajectory, headers, (n_e1, 1, 1, 1, 1))


def recon_data_messages(acquisitions: list, header: str | None = None) -> list[bytes]:
    """One ReconData message per slice (trigger on slice, split slices): imaging lines in the data buffer,
    calibration lines (also) in the reference buffer; noise scans dropped (NoiseAdjust consumed them). E1 spans
    the header's encoding limits (as BucketToBuffer sizes it) or, without a header, the lines present."""
    limits = encoding_info(header).e1_limits if header is not None else None
    calibration_flags = (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
    by_slice: dict[int, list] = {}
    for acq in acquisitions:
        if not acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            by_slice.setdefault(acq.idx.slice, []).append(acq)
    messages = []
    for lines in by_slice.values():
        n_e1 = max(max(acq.idx.kspace_encode_step_1 for acq in lines), limits[1] if limits else 0) + 1
        imaging = [a for a in lines if not a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)]
        reference = [a for a in lines if any(a.is_flag_set(f) for f in calibration_flags)]
        body = _U64.pack(1) + _buffer(imaging, n_e1)
        body += _BOOL.pack(bool(reference)) + (_buffer(reference, n_e1) if reference else b"")
        messages.append(_ID.pack(MessageId.RECON_DATA) + body)
    return messages


assert ctypes.sizeof(SamplingDescription) == 56
