"""Receiving an upload: the request's file (multipart field ``file``, or a raw HDF5 body) streamed to disk,
bounded in size, in parts and in the size of everything around the file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from mrdserve.service.rest.errors import ApiError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

UPLOAD_FIELD = "file"
MULTIPART_SLACK = 64 * 1024  # multipart framing and other fields around the file part, on top of the upload limit
MAX_MULTIPART_PARTS = 16  # a form with the file and a few small fields; more is not a client of ours
MAX_PART_HEADER_BYTES = 8 * 1024


async def receive_upload(request: Request, destination: Path, max_bytes: int, too_large: ApiError) -> int:
    """Stream the request's file (multipart field ``file``, or a raw HDF5 body) to ``destination``; its size."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + MULTIPART_SLACK:
        raise too_large
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    written = 0
    with open(destination, "wb") as sink:
        def write(data: bytes) -> None:
            nonlocal written
            written += len(data)
            if written > max_bytes:
                raise too_large
            sink.write(data)

        if content_type == b"multipart/form-data":
            found = await _receive_multipart(request, options.get(b"boundary"), write)
            if not found:
                raise ApiError(422, "missing_file", f"the multipart upload has no field {UPLOAD_FIELD!r}; send the "
                                                    f"ISMRMRD file as multipart field {UPLOAD_FIELD!r}")
        else:
            async for chunk in request.stream():
                write(chunk)
    if written == 0:
        raise ApiError(422, "empty_upload", "the upload is empty; send an ISMRMRD HDF5 file as multipart field "
                                            f"{UPLOAD_FIELD!r}")
    return written


async def _receive_multipart(request: Request, boundary: bytes | None, write: Callable[[bytes], None]) -> bool:
    """Feed the body through a streaming multipart parser, writing only the ``file`` part; whether it was found."""
    if not boundary:
        raise ApiError(400, "bad_multipart", "multipart/form-data upload without a boundary")
    part = _FilePart(write)
    parser = MultipartParser(boundary, part.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        raise
    except Exception as error:  # python-multipart raises its own parse errors
        raise ApiError(400, "bad_multipart", f"the multipart upload could not be parsed: {error}") from error
    return part.found


class _FilePart:
    """The multipart parser's callbacks: the first ``file`` part goes to ``write``, other parts are only counted
    (bounded in number, in header size and in total size)."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.field = self.value = b""
        self.headers: dict[bytes, bytes] = {}
        self.target = self.found = False
        self.parts = self.other_bytes = self.header_bytes = 0

    def callbacks(self) -> MultipartCallbacks:
        return {"on_header_field": self.on_header_field, "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end, "on_headers_finished": self.on_headers_finished,
                "on_part_data": self.on_part_data, "on_part_end": self.on_part_end}

    def _count_header(self, size: int) -> None:
        self.header_bytes += size
        if self.header_bytes > MAX_PART_HEADER_BYTES:
            raise ApiError(400, "bad_multipart", f"a multipart part's headers exceed {MAX_PART_HEADER_BYTES} bytes")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.field.lower()] = self.value
        self.field = self.value = b""

    def on_headers_finished(self) -> None:
        self.parts += 1
        self.header_bytes = 0
        if self.parts > MAX_MULTIPART_PARTS:
            raise ApiError(400, "bad_multipart", f"the multipart upload has more than {MAX_MULTIPART_PARTS} parts; "
                                                 f"send the ISMRMRD file as field {UPLOAD_FIELD!r}")
        _, disposition = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.target = disposition.get(b"name") == UPLOAD_FIELD.encode() and not self.found
        self.found = self.found or self.target
        self.headers = {}

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.target:
            self.write(data[start:end])
            return
        self.other_bytes += end - start
        if self.other_bytes > MULTIPART_SLACK:
            raise ApiError(413, "too_large", f"the multipart fields other than {UPLOAD_FIELD!r} exceed "
                                             f"{MULTIPART_SLACK} bytes", {"Connection": "close"})

    def on_part_end(self) -> None:
        self.target = False
