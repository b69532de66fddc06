"""Our side of Gadgetron's external-language connection: size-limited reads with a timeout, and writers for
images, ERROR (id 8) and CLOSE, on a plain socket.

Two ways to get one: ``accept_handshake`` reads CONFIG (2) and HEADER (3) itself (our listener and launcher), and
``from_gadgetron`` takes over the socket of a ``gadgetron.external.Connection`` after *its* handshake (the
``python -m gadgetron`` launcher that Gadgetron's ``<execute type="python"/>`` runs). From then on the
``gadgetron`` package is no longer used to read or write, so its defects (unknown ids silently ending the
stream, no ERROR message, ``np.array(copy=False)`` under numpy 2) are not inherited. Its ``Connection.__exit__``
sends CLOSE itself, so for such a connection ``close`` leaves the final CLOSE to it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

import ismrmrd

from mrdserve.gadgets.recon_data import recon_data_parser
from mrdserve.service.mrd.protocol import (
    Limits,
    Message,
    MessageId,
    ProtocolError,
    encode_close,
    encode_error,
    encode_object,
    read_message_blocking,
)

log = logging.getLogger("mrdserve.gadget")

EXTRA_PARSERS = {MessageId.RECON_DATA: recon_data_parser}
DEFAULT_READ_TIMEOUT_S = 300.0
DEFAULT_LIMITS = Limits()


class GadgetConnection:
    """One connection from a Gadgetron chain; ``config_text`` and ``header_text`` are the handshake's payloads."""

    def __init__(self, sock: socket.socket, config_text: str, header_text: str, *,
                 read_timeout_s: float = DEFAULT_READ_TIMEOUT_S, limits: Limits = DEFAULT_LIMITS,
                 sends_close: bool = True) -> None:
        self.sock = sock
        self.config_text = config_text
        self.header_text = header_text
        self.read_timeout_s = read_timeout_s
        self.limits = limits
        self.sends_close = sends_close
        self.closed = False
        self._write_lock = threading.Lock()
        sock.settimeout(read_timeout_s)
        with contextlib.suppress(OSError):  # an image's last segment must not wait for a delayed ACK (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def accept_handshake(cls, sock: socket.socket, *, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
                         limits: Limits = DEFAULT_LIMITS) -> GadgetConnection:
        """Read CONFIG (text, or a CONFIG_FILE name) then HEADER from ``sock``; ProtocolError otherwise."""
        connection = cls(sock, "", "", read_timeout_s=read_timeout_s, limits=limits)
        first = connection.read()
        if first.id not in (MessageId.CONFIG_TEXT, MessageId.CONFIG_FILE):
            raise ProtocolError(f"expected CONFIG (id 2) first, got message id {first.id}")
        second = connection.read()
        if second.id != MessageId.HEADER:
            raise ProtocolError(f"expected HEADER (id 3) after CONFIG, got message id {second.id}")
        connection.config_text, connection.header_text = first.value, second.value
        return connection

    @classmethod
    def from_gadgetron(cls, conn: Any, *, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
                       limits: Limits = DEFAULT_LIMITS) -> GadgetConnection:
        """Take over a ``gadgetron.external.Connection`` whose handshake is done (its socket reads exactly what
        it needs, so ours continues at the first data message)."""
        raw = conn.raw_bytes
        return cls(conn.socket.socket, _text(raw.config), _text(raw.header), read_timeout_s=read_timeout_s,
                   limits=limits, sends_close=False)

    # -- reading -----------------------------------------------------------------------------------------------

    def _read_exactly(self, count: int) -> bytes:
        buffer = bytearray()
        while len(buffer) < count:
            try:
                chunk = self.sock.recv(min(count - len(buffer), 1 << 20))
            except TimeoutError:
                raise TimeoutError(f"no data from Gadgetron for {self.read_timeout_s:g} s") from None
            if not chunk:
                break
            buffer += chunk
        return bytes(buffer)

    def read(self) -> Message:
        """The next message; ProtocolError (unknown id, bad size), StreamEndedError, TimeoutError."""
        return read_message_blocking(self._read_exactly, self.limits, EXTRA_PARSERS)

    # -- writing -----------------------------------------------------------------------------------------------

    def _write(self, payload: bytes) -> None:
        with self._write_lock:
            self.sock.sendall(payload)

    def send(self, item: ismrmrd.Image | ismrmrd.Acquisition | ismrmrd.Waveform) -> None:
        self._write(encode_object(item))

    # No TEXT (5) towards Gadgetron: its ExternalChannel treats TEXT from the external peer as an illegal message
    # id; ERROR (8, uint64 length) is what it reads, collects, and raises as a RemoteError at CLOSE.

    def send_error(self, reason: str) -> None:
        """Gadgetron's ERROR message; a peer that already went away is only logged."""
        try:
            self._write(encode_error(reason))
        except OSError as error:
            log.warning("could not send ERROR to Gadgetron: %s", error)

    def discard_pending(self, max_s: float = 2.0, idle_s: float = 0.2) -> None:
        """Read and drop what the peer is still sending (after an error), so that closing the socket does not
        reset the connection before our ERROR and CLOSE are read; bounded by ``max_s``."""
        deadline = time.monotonic() + max_s
        try:
            self.sock.settimeout(idle_s)
            while time.monotonic() < deadline and self.sock.recv(1 << 20):
                pass
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(self.read_timeout_s)

    def close(self) -> None:
        """Send CLOSE (unless gadgetron's own Connection will) and close our socket."""
        if self.closed:
            return
        self.closed = True
        if not self.sends_close:
            return
        try:
            self._write(encode_close())
        except OSError as error:
            log.warning("could not send CLOSE to Gadgetron: %s", error)
        finally:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    return raw.rstrip(b"\x00").decode("utf-8", errors="replace")
