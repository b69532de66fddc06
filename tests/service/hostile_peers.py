"""Helpers for the hostile-input tests: a small good file, a fake engine for the MRD server, in-memory MRD
sessions and a uvicorn server in a thread (the real HTTP protocol, so connection timeouts can be seen)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn

from mrdserve.service.engine.result import ReconResult
from mrdserve.service.metrics import ServiceMetrics
from mrdserve.service.mrd.protocol import Limits, Message, StreamEndedError, read_message_blocking
from mrdserve.service.mrd.session import MrdSession
from mrdserve.service.slow_clients import guarded_h11


def small_file(path: Path, matrix: int = 16, coils: int = 2) -> Path:
    """A tiny simulated Cartesian file (fast to mutate and read)."""
    from mrdserve.service.cli import main
    assert main(["simulate", str(path), "--coils", str(coils), "--acceleration", "2", "--matrix", str(matrix),
                 "--seed", "5"]) == 0
    return path


class StreamEngine:
    """What MrdSession needs from an engine: instant images, no artifacts."""

    def __init__(self) -> None:
        self.metrics = ServiceMetrics()
        self.ready = True
        self.artifacts: list[Any] = []

    async def reconstruct(self, samples, choice=None, request_id=""):
        return [ReconResult(image=np.ones(s.recon_matrix, np.float32), sample=s, label="fake-1") for s in samples]


class _Writer:
    """An asyncio StreamWriter stand-in that keeps what was written."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, payload: bytes) -> None:
        self.data += payload

    async def drain(self) -> None:
        return None

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 0) if name == "peername" else None


def messages_of(data: bytes) -> list[Message]:
    """Decode a byte stream the server wrote into messages (it must end with CLOSE)."""
    position = 0

    def read(n: int) -> bytes:
        nonlocal position
        chunk = data[position:position + n]
        position += len(chunk)
        return chunk

    out = []
    while position < len(data):
        try:
            out.append(read_message_blocking(read, Limits()))
        except StreamEndedError:
            break
    return out


def run_session(payload: bytes, engine: Any, **session_options: Any) -> list[Message]:
    """Serve one MRD connection whose client sent ``payload`` (then EOF); the messages the server answered."""
    async def serve() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(payload)
        reader.feed_eof()
        writer = _Writer()
        await MrdSession(reader, writer, engine, engine_wait_s=0.1, **session_options).run()  # type: ignore[arg-type]
        return bytes(writer.data)

    return messages_of(asyncio.run(serve()))


class UvicornThread:
    """An ASGI app behind uvicorn (with our slow-client guard) on a free loopback port, in a daemon thread."""

    def __init__(self, app: Any, read_timeout_s: float, max_connections: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on",
                                http=guarded_h11(read_timeout_s), limit_concurrency=max_connections)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=asyncio.run, args=(self.server.serve(),), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not (self.server.started and self.server.servers) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
