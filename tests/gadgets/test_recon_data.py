"""The ReconData (1023) parser: round trip of what BucketToBuffer sends, and limits checked before reading."""

from __future__ import annotations

import io
import struct

import ismrmrd
import numpy as np
import pytest

from mrdserve.gadgets.connection import EXTRA_PARSERS
from mrdserve.gadgets.recon_data import bit_to_acquisitions
from mrdserve.service.mrd.protocol import Limits, MessageId, ProtocolError, read_message_blocking
from tests.gadgets.gadgetron_side import recon_data_messages


def _read(raw: bytes, limits: Limits | None = None):
    return read_message_blocking(io.BytesIO(raw).read, limits or Limits(), EXTRA_PARSERS)


def test_round_trip_gives_back_the_acquisitions(cartesian_quiet):
    header, acquisitions = cartesian_quiet
    first_slice = [a for a in acquisitions if a.idx.slice == 0]
    message = _read(recon_data_messages(first_slice, header)[0])
    assert message.id == MessageId.RECON_DATA
    [bit] = message.value.bits
    assert bit.data.data.shape == (192, 96, 1, 8, 1, 1, 1)
    assert bit.reference is not None
    back = bit_to_acquisitions(bit)
    assert [a.idx.kspace_encode_step_1 for a in back] == sorted(a.idx.kspace_encode_step_1 for a in first_slice)
    by_line = {a.idx.kspace_encode_step_1: a for a in first_slice}
    for acq in back:
        np.testing.assert_array_equal(acq.data, by_line[acq.idx.kspace_encode_step_1].data)
        assert not acq.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)


def test_sizes_are_checked_before_anything_is_read(cartesian_quiet):
    _, acquisitions = cartesian_quiet
    raw = recon_data_messages([a for a in acquisitions if a.idx.slice == 0])[0]
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        _read(raw, Limits(max_payload_bytes=1024))
    absurd = struct.pack("<HQQ", MessageId.RECON_DATA, 1, 7) + struct.pack("<7Q", *([1 << 20] * 7))
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        _read(absurd)
    with pytest.raises(ProtocolError, match="truncated"):
        _read(raw[:-10])
    with pytest.raises(ProtocolError, match="bits"):
        _read(struct.pack("<HQ", MessageId.RECON_DATA, 1 << 40))
