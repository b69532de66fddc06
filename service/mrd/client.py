"""A small MRD client (like gadgetron_ismrmrd_client): stream an ISMRMRD file to an MRD server, save the images.

``mrdserve stream INPUT.h5 -o OUT.h5 [--host H] [--port 9002] [--config default]`` sends the config, the header,
optional JSON parameters, every acquisition and CLOSE, while a reader thread collects images and TEXT lines until
the server's CLOSE. Per slice it measures the time from sending the slice's last acquisition to receiving its
image (the inline latency). Images go to ``OUT.h5`` as groups ``image_<series>``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ismrmrd

from mrdserve.service.mrd.protocol import (
    MessageId,
    ProtocolError,
    StreamEndedError,
    encode_close,
    encode_config_file,
    encode_object,
    encode_text,
    read_message_blocking,
)

SliceKey = tuple[int, int, int, int, int]


def slice_key(item: Any) -> SliceKey:
    """(slice, contrast, repetition, set, phase) of an acquisition or image."""
    index = item.idx if isinstance(item, ismrmrd.Acquisition) else item
    return (int(index.slice), int(index.contrast), int(index.repetition), int(index.set), int(index.phase))


@dataclass
class StreamResult:
    """What came back: images, TEXT lines (``errors`` are those starting with ``ERROR``), per-slice latency."""

    images: list[ismrmrd.Image] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    closed: bool = False  # the server ended with CLOSE
    latencies_s: dict[SliceKey, float] = field(default_factory=dict)
    sent_at: dict[SliceKey, float] = field(default_factory=dict)
    received_at: dict[SliceKey, float] = field(default_factory=dict)
    failure: str | None = None  # a transport or protocol problem on the receiving side

    @property
    def errors(self) -> list[str]:
        return [text for text in self.texts if text.startswith("ERROR")]


class Receiver(threading.Thread):
    """Reads the server's messages until CLOSE (or the socket ends) into a ``StreamResult``."""

    def __init__(self, sock: socket.socket, result: StreamResult,
                 on_image: Callable[[ismrmrd.Image], None] | None = None) -> None:
        super().__init__(daemon=True, name="mrd-client-receiver")
        self.stream = sock.makefile("rb")
        self.result, self.on_image = result, on_image

    def run(self) -> None:
        result = self.result
        try:
            while True:
                message = read_message_blocking(self.stream.read)
                if message.id == MessageId.CLOSE:
                    result.closed = True
                    return
                if message.id == MessageId.IMAGE:
                    now = time.perf_counter()
                    image = message.value
                    key = slice_key(image)
                    result.images.append(image)
                    result.received_at.setdefault(key, now)
                    if key in result.sent_at and key not in result.latencies_s:
                        result.latencies_s[key] = now - result.sent_at[key]
                    if self.on_image is not None:
                        self.on_image(image)
                elif message.id in (MessageId.TEXT, MessageId.ERROR):
                    result.texts.append(("ERROR: " if message.id == MessageId.ERROR else "") + str(message.value))
                else:
                    result.texts.append(f"(ignored message id {message.id})")
        except StreamEndedError:
            result.failure = "the server closed the connection without CLOSE"
        except (ProtocolError, OSError) as error:
            result.failure = f"{type(error).__name__}: {error}"


def last_acquisitions(acquisitions: list[ismrmrd.Acquisition]) -> dict[int, SliceKey]:
    """Position in the list -> slice key, for the last imaging acquisition of every slice."""
    last: dict[SliceKey, int] = {}
    for position, acq in enumerate(acquisitions):
        if not acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            last[slice_key(acq)] = position
    return {position: key for key, position in last.items()}


def stream_acquisitions(host: str, port: int, header_xml: str, acquisitions: list[ismrmrd.Acquisition], *,
                        config: str = "default", config_text: bool = False, parameters: dict | None = None,
                        timeout_s: float = 300.0) -> StreamResult:
    """One whole stream: connect, send everything, wait for the server's CLOSE; never raises for server errors."""
    result = StreamResult()
    ends = last_acquisitions(acquisitions)
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        receiver = Receiver(sock, result)
        receiver.start()
        try:
            sock.sendall(encode_text(config, MessageId.CONFIG_TEXT) if config_text else encode_config_file(config))
            sock.sendall(encode_text(header_xml, MessageId.HEADER))
            if parameters is not None:
                sock.sendall(encode_text(json.dumps(parameters)))
            for position, acq in enumerate(acquisitions):
                sock.sendall(encode_object(acq))
                if position in ends:
                    result.sent_at[ends[position]] = time.perf_counter()
            sock.sendall(encode_close())
        except OSError as error:  # the server ended the stream early (it says why in a TEXT line)
            result.failure = f"sending stopped: {error}"
        receiver.join(timeout_s)
    for key, sent in result.sent_at.items():  # images that came back before the sender noted the time
        if key in result.received_at and key not in result.latencies_s:
            result.latencies_s[key] = max(result.received_at[key] - sent, 0.0)
    return result


def stream_file(path: str | Path, host: str = "127.0.0.1", port: int = 9002, *, group: str = "dataset",
                **options: Any) -> StreamResult:
    """Stream the acquisitions of an ISMRMRD file (see ``stream_acquisitions`` for the options)."""
    from mrdserve.models.data.ismrmrd_io import read_acquisitions

    xml, acquisitions = read_acquisitions(path, group)
    return stream_acquisitions(host, port, xml, acquisitions, **options)


def write_images(images: list[ismrmrd.Image], path: str | Path, header_xml: str | None = None,
                 group: str = "dataset") -> Path:
    """Images into an ISMRMRD HDF5 file, one group ``image_<series>`` per series index."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ismrmrd.Dataset(str(path), group, create_if_needed=True) as dataset:
        if header_xml is not None:
            dataset.write_xml_header(header_xml.encode("utf-8"))
        for image in images:
            dataset.append_image(f"image_{image.image_series_index}", image)
    return path


# ------------------------------------------------------------------------------------------------ command line
def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("input", type=Path, help="ISMRMRD HDF5 file whose acquisitions are streamed")
    add("-o", "--output", type=Path, default=None, help="write the returned images here (ISMRMRD HDF5)")
    add("--host", default="127.0.0.1", help="MRD server address (default 127.0.0.1)")
    add("-p", "--port", type=int, default=9002, help="MRD server port (default 9002)")
    add("-c", "--config", default="default",
        help="config name: default, classical, cartesian, noncartesian or an artifact name (default: default)")
    add("--config-text", action="store_true", help="send the config as CONFIG_TEXT instead of CONFIG_FILE")
    add("-G", "--group", default="dataset", help="dataset group in the input file (default dataset)")
    add("--params", default=None, metavar="JSON",
        help='JSON parameters sent as TEXT after the header, e.g. \'{"dtype": "uint16"}\'')
    add("--timeout", type=float, default=300.0, help="seconds to wait for the server (default 300)")
    add("-q", "--quiet", action="store_true", help="print only the summary")


def run_stream(args: argparse.Namespace) -> int:
    from mrdserve.models.data.ismrmrd_io import read_acquisitions

    parameters = None
    if args.params:
        try:
            parameters = json.loads(args.params)
        except json.JSONDecodeError as error:
            print(f"mrdserve stream: --params is not JSON: {error}", file=sys.stderr)
            return 2
    try:
        xml, acquisitions = read_acquisitions(args.input, args.group)
    except (ValueError, FileNotFoundError) as error:
        print(f"mrdserve stream: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        result = stream_acquisitions(args.host, args.port, xml, acquisitions, config=args.config,
                                     config_text=args.config_text, parameters=parameters, timeout_s=args.timeout)
    except OSError as error:
        print(f"mrdserve stream: cannot reach the MRD server at {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    if not args.quiet:
        for text in result.texts:
            print(f"server: {text}")
        for key in sorted(result.latencies_s):
            print(f"slice {key[0]} (contrast {key[1]}, repetition {key[2]}): image "
                  f"{1000 * result.latencies_s[key]:.1f} ms after its last acquisition")
    if args.output is not None and result.images:
        write_images(result.images, args.output, xml)
    print(f"{len(result.images)} image(s) from {len(acquisitions)} acquisitions in {elapsed:.2f} s"
          + (f" -> {args.output}" if args.output is not None and result.images else ""))
    if result.failure or not result.closed:
        print(f"mrdserve stream: {result.failure or 'no CLOSE from the server'}", file=sys.stderr)
        return 1
    if result.errors:
        print("mrdserve stream: the server reported: " + "; ".join(result.errors), file=sys.stderr)
        return 1
    return 0
