"""Our own listener and launcher for the gadget, without the ``gadgetron`` package.

``Listener`` serves Gadgetron's ``<external><connect port="..."/></external>``: it accepts any number of
connections (one thread each), reads the CONFIG/HEADER handshake itself and hands each stream to
``reconstruct``; all streams share one engine. ``connect_back`` does what ``python -m gadgetron <port> ...``
does (connect to Gadgetron's port and serve that one stream), with our connection and error reporting.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

from mrdserve.gadgets.connection import DEFAULT_READ_TIMEOUT_S, GadgetConnection
from mrdserve.gadgets.reconstruct import reconstruct, shared_engine
from mrdserve.gadgets.settings import GadgetSettings
from mrdserve.service.engine.engine import Engine
from mrdserve.service.mrd.protocol import encode_close, encode_error

log = logging.getLogger("mrdserve.gadget")
CONNECT_TIMEOUT_S = 30.0


def _serve_socket(sock: socket.socket, engine: Engine | None, settings: GadgetSettings | None,
                  read_timeout_s: float) -> bool:
    """Handshake then ``reconstruct``; a bad handshake is answered with ERROR and CLOSE too."""
    try:
        connection = GadgetConnection.accept_handshake(sock, read_timeout_s=read_timeout_s)
    except Exception as error:
        reason = f"mrdserve gadget: {type(error).__name__}: {error}"
        log.error("%s", reason)
        with contextlib.suppress(OSError):
            sock.sendall(encode_error(reason) + encode_close())
        sock.close()
        return False
    return reconstruct(connection, engine=engine, settings=settings)


class Listener:
    """Accepts Gadgetron connections on ``host:port`` (port 0: any free port, see ``.port``) until ``close``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9100, *, engine: Engine | None = None,
                 settings: GadgetSettings | None = None, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> None:
        self.engine = engine
        self.settings = settings
        self.read_timeout_s = read_timeout_s
        self._server = socket.create_server((host, port))
        self.port = int(self._server.getsockname()[1])
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    def serve_forever(self, max_connections: int | None = None) -> None:
        """Accept and serve connections (each in its own thread); stop after ``max_connections`` if given."""
        served = 0
        while not self._closed.is_set() and (max_connections is None or served < max_connections):
            try:
                sock, address = self._server.accept()
            except OSError:
                break  # closed
            log.info("Gadgetron connected from %s:%s", *address[:2])
            thread = threading.Thread(target=_serve_socket, name=f"gadget-{served}", daemon=True,
                                      args=(sock, self.engine, self.settings, self.read_timeout_s))
            thread.start()
            self._threads.append(thread)
            served += 1
        for thread in self._threads:
            thread.join()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="gadget-listener", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()


def connect_back(port: int, host: str = "localhost", *, engine: Engine | None = None,
                 settings: GadgetSettings | None = None, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> bool:
    """Connect to Gadgetron (as its ``<execute>`` launcher would) and serve that one stream."""
    sock = socket.create_connection((host, port), CONNECT_TIMEOUT_S)
    return _serve_socket(sock, engine, settings, read_timeout_s)


def preload(settings: GadgetSettings | None) -> Engine:
    """Load the engine before the first connection (so the first stream does not wait for it)."""
    return shared_engine(settings or GadgetSettings())
