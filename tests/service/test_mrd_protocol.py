"""The MRD framing (service.mrd.protocol) against ismrmrd's own ProtocolSerializer / ProtocolDeserializer, and its
refusals: truncated messages, unknown ids, absurd sizes, text that is not UTF-8."""

from __future__ import annotations

import asyncio
import io
import struct

import ismrmrd
import numpy as np
import pytest
from ismrmrd.serialization import ConfigFile, ConfigText, ProtocolDeserializer, ProtocolSerializer

from mrdserve.models.data.ismrmrd_header import parse_header
from mrdserve.models.data.ismrmrd_io import read_acquisitions
from mrdserve.models.data.simulate import simulate_to_file
from mrdserve.service.mrd.protocol import (
    CONFIG_FILE_SIZE,
    Limits,
    MessageId,
    ProtocolError,
    StreamEndedError,
    encode_close,
    encode_config_file,
    encode_error,
    encode_object,
    encode_text,
    read_message,
    read_message_blocking,
)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """(header XML, a few acquisitions with a trajectory) from a small simulated radial file."""
    path = tmp_path_factory.mktemp("protocol") / "radial.h5"
    simulate_to_file(path, "radial", coils=2, acceleration=4, matrix=16, seed=1, noise_scan=True)
    xml, acquisitions = read_acquisitions(path)
    return xml, [acquisitions[0], acquisitions[-1]]


def _image() -> ismrmrd.Image:
    image = ismrmrd.Image.from_array(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    image.image_series_index, image.slice = 3, 2
    image.meta = ismrmrd.Meta({"DataRole": "Image", "WindowCenter": "12"})
    return image


def _waveform() -> ismrmrd.Waveform:
    return ismrmrd.Waveform.from_array(np.arange(30, dtype=np.uint32).reshape(3, 10))


def _read_all(data: bytes, limits: Limits | None = None) -> list:
    limits = limits or Limits()
    stream = io.BytesIO(data)
    messages = []
    while True:
        try:
            messages.append(read_message_blocking(stream.read, limits))
        except StreamEndedError:
            return messages


def _objects(xml: str, acquisitions: list) -> list:
    return [ConfigFile("default.xml"), ConfigText("classical"), parse_header(xml), "a log line", *acquisitions,
            _image(), _waveform(), np.arange(6, dtype=np.complex64).reshape(2, 3)]


def test_reads_what_ismrmrd_serializes(recording):
    xml, acquisitions = recording
    out = io.BytesIO()
    serializer = ProtocolSerializer(out)
    for item in _objects(xml, acquisitions):
        serializer.serialize(item)
    serializer.close()
    messages = _read_all(out.getvalue())
    assert [m.id for m in messages] == [MessageId.CONFIG_FILE, MessageId.CONFIG_TEXT, MessageId.HEADER,
                                        MessageId.TEXT, MessageId.ACQUISITION, MessageId.ACQUISITION,
                                        MessageId.IMAGE, MessageId.WAVEFORM, MessageId.NDARRAY, MessageId.CLOSE]
    assert messages[0].value == "default.xml" and messages[1].value == "classical"
    assert parse_header(messages[2].value).encoding[0].trajectory.value == "radial"
    assert messages[3].value == "a log line"
    for message, acq in zip(messages[4:6], acquisitions, strict=True):
        assert encode_object(message.value) == encode_object(acq)
        np.testing.assert_array_equal(message.value.traj, acq.traj)
    assert encode_object(messages[6].value) == encode_object(_image())
    assert messages[6].value.meta["WindowCenter"] == "12"
    np.testing.assert_array_equal(messages[7].value.data, _waveform().data)
    np.testing.assert_array_equal(messages[8].value, np.arange(6, dtype=np.complex64).reshape(2, 3))


def test_ismrmrd_reads_what_we_encode(recording):
    xml, acquisitions = recording
    data = (encode_config_file("default.xml") + encode_text("classical", MessageId.CONFIG_TEXT)
            + encode_text(xml, MessageId.HEADER) + encode_text("a log line")
            + b"".join(encode_object(a) for a in acquisitions) + encode_object(_image())
            + encode_object(_waveform()) + encode_close())
    items = list(ProtocolDeserializer(io.BytesIO(data)).deserialize())
    assert isinstance(items[0], ConfigFile) and items[0] == "default.xml"
    assert isinstance(items[1], ConfigText) and items[1] == "classical"
    assert items[2].encoding[0].trajectory.value == "radial" and items[3] == "a log line"
    for item, acq in zip(items[4:6], acquisitions, strict=True):
        np.testing.assert_array_equal(item.data, acq.data)
    assert encode_object(items[6]) == encode_object(_image())
    np.testing.assert_array_equal(items[7].data, _waveform().data)
    assert len(items) == 8  # the deserializer stopped at our CLOSE


def test_asyncio_reader_matches_the_blocking_one(recording):
    xml, acquisitions = recording
    data = encode_text(xml, MessageId.HEADER) + encode_object(acquisitions[1]) + encode_error("chain failed")

    async def read() -> list:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        messages = [await read_message(reader) for _ in range(3)]
        with pytest.raises(StreamEndedError):
            await read_message(reader)
        return messages

    messages = asyncio.run(read())
    assert [m.id for m in messages] == [MessageId.HEADER, MessageId.ACQUISITION, MessageId.ERROR]
    assert messages[2].value == "chain failed"
    assert encode_object(messages[1].value) == encode_object(acquisitions[1])


def test_header_with_trailing_nul_parses(recording):
    xml, _ = recording
    raw = xml.encode() + b"\x00"  # python-ismrmrd-server's client.py sends the NUL terminator
    message = _read_all(struct.pack("<HI", MessageId.HEADER, len(raw)) + raw)[0]
    assert not message.value.endswith("\x00")
    assert parse_header(message.value).encoding[0].trajectory.value == "radial"


def test_truncated_messages_are_protocol_errors(recording):
    xml, acquisitions = recording
    for whole in (encode_object(acquisitions[1]), encode_object(_image()), encode_object(_waveform()),
                  encode_text(xml, MessageId.HEADER), encode_config_file("default"), encode_error("x" * 20)):
        for cut in (1, 3, len(whole) // 2, len(whole) - 1):
            with pytest.raises(ProtocolError, match="truncated"):
                read_message_blocking(io.BytesIO(whole[:cut]).read)
    with pytest.raises(StreamEndedError):
        read_message_blocking(io.BytesIO(b"").read)


def test_unknown_ids_and_undecodable_payloads():
    with pytest.raises(ProtocolError, match="unknown message id 999"):
        read_message_blocking(io.BytesIO(struct.pack("<H", 999) + b"\x00" * 10).read)
    with pytest.raises(ProtocolError, match="not UTF-8"):
        read_message_blocking(io.BytesIO(struct.pack("<HI", MessageId.TEXT, 2) + b"\xff\xfe").read)
    bad_type = bytearray(encode_object(_image()))
    struct.pack_into("<H", bad_type, 2 + 2, 99)  # ImageHeader.data_type
    with pytest.raises(ProtocolError, match="data_type 99"):
        read_message_blocking(io.BytesIO(bytes(bad_type)).read)


def test_absurd_sizes_are_refused_before_anything_is_read(recording):
    _, acquisitions = recording
    asked: list[int] = []

    def read_from(data: bytes):
        stream = io.BytesIO(data)

        def read(n: int) -> bytes:
            asked.append(n)
            return stream.read(n)
        return read

    limits = Limits(max_text_bytes=1000, max_payload_bytes=10_000)
    with pytest.raises(ProtocolError, match="ISMRMRD header of 4294967295 bytes exceeds the limit of 1000"):
        read_message_blocking(read_from(struct.pack("<HI", MessageId.HEADER, 0xFFFFFFFF)), limits)
    with pytest.raises(ProtocolError, match=r"error message of .* exceeds"):
        read_message_blocking(read_from(struct.pack("<HQ", MessageId.ERROR, 1 << 60)), limits)
    huge = bytearray(encode_object(acquisitions[1]))
    struct.pack_into("<HH", huge, 2 + 34, 65535, 65535)  # number_of_samples, available_channels
    struct.pack_into("<H", huge, 2 + 38, 65535)  # active_channels
    with pytest.raises(ProtocolError, match=r"acquisition data of .* exceeds"):
        read_message_blocking(read_from(bytes(huge)), limits)
    with pytest.raises(ProtocolError, match="at most 16"):
        read_message_blocking(read_from(struct.pack("<HHHH", MessageId.NDARRAY, 5, 0, 40)), limits)
    assert max(asked) <= 1000  # nothing past the limit was ever requested


def test_encoders_refuse_what_does_not_fit():
    with pytest.raises(ValueError, match="at most 1023"):
        encode_config_file("x" * CONFIG_FILE_SIZE)
    with pytest.raises(TypeError, match="cannot encode"):
        encode_object("text")  # type: ignore[arg-type]
    assert encode_close() == struct.pack("<H", 4)
    assert len(encode_config_file("default.xml")) == 2 + CONFIG_FILE_SIZE
