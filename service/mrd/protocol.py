"""The MRD (ISMRMRD) streaming protocol's framing: message ids, a size-checked reader and byte encoders.

Every message starts with a little-endian uint16 id. Text-like payloads (CONFIG_TEXT, HEADER, TEXT) carry a
uint32 length, CONFIG_FILE a fixed 1024-byte NUL-padded name, Gadgetron's ERROR a uint64 length; acquisitions,
images and waveforms are ISMRMRD's own binary layout (header, then sizes the header implies). The parser is
written once as a generator that asks for byte counts, so an asyncio stream and a blocking socket share it, and
every size is checked against ``Limits`` *before* anything is read or allocated.

Extra message kinds (Gadgetron's ReconData, say) plug in through ``extra_parsers``: a generator function with the
same ``yield n -> bytes`` convention that returns the decoded value.
"""

from __future__ import annotations

import asyncio
import ctypes
import io
import struct
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import ismrmrd
from ismrmrd.acquisition import AcquisitionHeader
from ismrmrd.image import ImageHeader
from ismrmrd.waveform import WaveformHeader

CONFIG_FILE_SIZE = 1024
_ID = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_NDARRAY_HEAD = struct.Struct("<HHH")
_IMAGE_ITEMSIZE = {ismrmrd.DATATYPE_USHORT: 2, ismrmrd.DATATYPE_SHORT: 2, ismrmrd.DATATYPE_UINT: 4,
                   ismrmrd.DATATYPE_INT: 4, ismrmrd.DATATYPE_FLOAT: 4, ismrmrd.DATATYPE_DOUBLE: 8,
                   ismrmrd.DATATYPE_CXFLOAT: 8, ismrmrd.DATATYPE_CXDOUBLE: 16}


class MessageId(IntEnum):
    """Message ids of the MRD streaming protocol and of Gadgetron's external-language protocol."""

    CONFIG_FILE = 1
    CONFIG_TEXT = 2
    HEADER = 3
    CLOSE = 4
    TEXT = 5
    ERROR = 8  # Gadgetron: uint64 length + UTF-8 reason
    ACQUISITION = 1008
    IMAGE = 1022
    RECON_DATA = 1023  # Gadgetron: IsmrmrdReconData after BucketToBuffer
    WAVEFORM = 1026
    NDARRAY = 1030


class ProtocolError(ValueError):
    """A malformed stream: unknown id, truncated message, absurd size or undecodable payload."""


class StreamEndedError(EOFError):
    """The peer closed the connection cleanly between two messages (no CLOSE message)."""


@dataclass(frozen=True)
class Limits:
    """Largest payloads accepted; anything bigger ends the connection before it is read."""

    max_text_bytes: int = 16 * 1024**2  # headers, configs, TEXT and ERROR messages
    max_payload_bytes: int = 1024**3  # one acquisition, image, waveform or array


@dataclass(frozen=True)
class Message:
    """One decoded message: ``value`` is str (texts), ismrmrd objects, a numpy array or None (CLOSE)."""

    id: int
    value: Any = None


Parser = Generator[int, bytes, Any]


def check_size(what: str, size: int, limit: int) -> int:
    """``size`` if it is within ``limit``; ProtocolError naming ``what`` otherwise."""
    if size < 0 or size > limit:
        raise ProtocolError(f"{what} of {size} bytes exceeds the limit of {limit} bytes")
    return size


def _decode_text(raw: bytes, what: str) -> str:
    try:
        return raw.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProtocolError(f"{what} is not UTF-8 text: {error}") from None


def _length_prefixed_text(what: str, length: struct.Struct, limits: Limits) -> Parser:
    size = check_size(what, length.unpack((yield length.size))[0], limits.max_text_bytes)
    return _decode_text((yield size), what) if size else ""


def _acquisition(limits: Limits) -> Parser:
    head_bytes = yield ctypes.sizeof(AcquisitionHeader)
    head = AcquisitionHeader.from_buffer_copy(head_bytes)
    size = check_size("acquisition data", 4 * head.number_of_samples * (head.trajectory_dimensions
                                                                        + 2 * head.active_channels),
                      limits.max_payload_bytes)
    payload = (yield size) if size else b""
    return ismrmrd.Acquisition.from_bytes(head_bytes + payload)


def _image(limits: Limits) -> Parser:
    head_bytes = yield ctypes.sizeof(ImageHeader)
    head = ImageHeader.from_buffer_copy(head_bytes)
    itemsize = _IMAGE_ITEMSIZE.get(head.data_type)
    if itemsize is None:
        raise ProtocolError(f"image data_type {head.data_type} is not an ISMRMRD data type")
    attribute_bytes = yield _U64.size
    attributes = check_size("image attribute string", _U64.unpack(attribute_bytes)[0], limits.max_text_bytes)
    size = itemsize * head.channels * head.matrix_size[0] * head.matrix_size[1] * head.matrix_size[2]
    check_size("image data", size, limits.max_payload_bytes)
    rest = attribute_bytes + ((yield attributes) if attributes else b"") + ((yield size) if size else b"")
    return ismrmrd.Image.deserialize_from_with_header(head_bytes, io.BytesIO(rest).read)


def _waveform(limits: Limits) -> Parser:
    head_bytes = yield ctypes.sizeof(WaveformHeader)
    head = WaveformHeader.from_buffer_copy(head_bytes)
    size = check_size("waveform data", 4 * head.channels * head.number_of_samples, limits.max_payload_bytes)
    payload = (yield size) if size else b""
    return ismrmrd.Waveform.from_bytes(head_bytes + payload)


def _ndarray(limits: Limits) -> Parser:
    import numpy as np
    from ismrmrd.image import get_dtype_from_data_type

    data_type, _version, ndim = _NDARRAY_HEAD.unpack((yield _NDARRAY_HEAD.size))
    if ndim > 16:
        raise ProtocolError(f"array with {ndim} dimensions (at most 16 accepted)")
    dims = struct.unpack(f"<{ndim}Q", (yield 8 * ndim)) if ndim else ()
    try:
        dtype = np.dtype(get_dtype_from_data_type(data_type))
    except Exception:
        raise ProtocolError(f"array data_type {data_type} is not an ISMRMRD data type") from None
    count = 1
    for dim in dims:
        count *= dim
    size = check_size("array data", count * dtype.itemsize, limits.max_payload_bytes)
    payload = (yield size) if size else b""
    return np.frombuffer(payload, dtype=dtype).reshape(dims)


def message_parser(limits: Limits, extra_parsers: Mapping[int, Callable[[Limits], Parser]] | None = None) -> Parser:
    """Parse one whole message (id included): yields byte counts, receives exactly that many bytes each time."""
    message_id = _ID.unpack((yield _ID.size))[0]
    if message_id == MessageId.CLOSE:
        return Message(MessageId.CLOSE)
    if message_id == MessageId.CONFIG_FILE:
        return Message(MessageId.CONFIG_FILE, _decode_text((yield CONFIG_FILE_SIZE), "config file name"))
    text_kinds = {MessageId.CONFIG_TEXT: ("config text", _U32), MessageId.HEADER: ("ISMRMRD header", _U32),
                  MessageId.TEXT: ("text message", _U32), MessageId.ERROR: ("error message", _U64)}
    if message_id in text_kinds:
        what, length = text_kinds[MessageId(message_id)]
        return Message(message_id, (yield from _length_prefixed_text(what, length, limits)))
    parsers: dict[int, Callable[[Limits], Parser]] = {
        MessageId.ACQUISITION: _acquisition, MessageId.IMAGE: _image, MessageId.WAVEFORM: _waveform,
        MessageId.NDARRAY: _ndarray, **(extra_parsers or {})}
    if message_id not in parsers:
        raise ProtocolError(f"unknown message id {message_id}")
    try:
        return Message(message_id, (yield from parsers[message_id](limits)))
    except (ProtocolError, EOFError):
        raise
    except Exception as error:  # a payload the ismrmrd classes reject
        raise ProtocolError(f"message {message_id} could not be decoded: {type(error).__name__}: {error}") from None


def _drive(parser: Parser, first: bytes | None) -> tuple[int | None, Any]:
    """Advance ``parser`` with ``first``: (bytes wanted next, None) or (None, the parsed result)."""
    try:
        return (next(parser) if first is None else parser.send(first)), None
    except StopIteration as done:
        return None, done.value


async def read_message(reader: asyncio.StreamReader, limits: Limits = Limits(),
                       extra_parsers: Mapping[int, Callable[[Limits], Parser]] | None = None) -> Message:
    """The next message from an asyncio stream; StreamEndedError at a clean EOF, ProtocolError when truncated."""
    parser = message_parser(limits, extra_parsers)
    wanted, result = _drive(parser, None)
    first = True
    while wanted is not None:
        try:
            chunk = await reader.readexactly(wanted)
        except asyncio.IncompleteReadError as error:
            if first and not error.partial:
                raise StreamEndedError("the peer closed the connection") from None
            raise ProtocolError(f"truncated message: the stream ended {wanted - len(error.partial)} bytes "
                                f"short") from None
        first = False
        wanted, result = _drive(parser, chunk)
    return result


def read_message_blocking(read: Callable[[int], bytes], limits: Limits = Limits(),
                          extra_parsers: Mapping[int, Callable[[Limits], Parser]] | None = None) -> Message:
    """The next message from a blocking ``read(n)`` (e.g. ``socket.makefile('rb').read``); same errors."""
    parser = message_parser(limits, extra_parsers)
    wanted, result = _drive(parser, None)
    first = True
    while wanted is not None:
        chunk = read(wanted)
        if len(chunk) < wanted:
            if first and not chunk:
                raise StreamEndedError("the peer closed the connection")
            raise ProtocolError(f"truncated message: the stream ended {wanted - len(chunk)} bytes short")
        first = False
        wanted, result = _drive(parser, chunk)
    return result


# -- encoders ----------------------------------------------------------------------------------------------------

def encode_close() -> bytes:
    return _ID.pack(MessageId.CLOSE)


def encode_text(text: str, message_id: int = MessageId.TEXT) -> bytes:
    """TEXT (default), CONFIG_TEXT or HEADER: id, uint32 length, UTF-8 bytes."""
    raw = text.encode("utf-8")
    return _ID.pack(message_id) + _U32.pack(len(raw)) + raw


def encode_error(reason: str) -> bytes:
    """Gadgetron's ERROR message (id 8): uint64 length and the UTF-8 reason."""
    raw = reason.encode("utf-8")
    return _ID.pack(MessageId.ERROR) + _U64.pack(len(raw)) + raw


def encode_config_file(name: str) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) >= CONFIG_FILE_SIZE:
        raise ValueError(f"config file name is {len(raw)} bytes; at most {CONFIG_FILE_SIZE - 1} fit")
    return _ID.pack(MessageId.CONFIG_FILE) + raw.ljust(CONFIG_FILE_SIZE, b"\x00")


def encode_object(item: ismrmrd.Acquisition | ismrmrd.Image | ismrmrd.Waveform) -> bytes:
    """An acquisition, image or waveform with its message id, in ISMRMRD's binary layout."""
    kinds = ((ismrmrd.Acquisition, MessageId.ACQUISITION), (ismrmrd.Image, MessageId.IMAGE),
             (ismrmrd.Waveform, MessageId.WAVEFORM))
    message_id = next((message_id for kind, message_id in kinds if isinstance(item, kind)), None)
    if message_id is None:
        raise TypeError(f"cannot encode {type(item).__name__} as an MRD message")
    out = io.BytesIO()
    out.write(_ID.pack(message_id))
    item.serialize_into(out.write)
    return out.getvalue()
