"""The MRD streaming server: an asyncio TCP listener (Gadgetron's port 9002) running one ``MrdSession`` per
connection over a shared engine, so that every connection's slices meet in the same batchers.

``start`` binds (port 0 picks a free port, see ``port``); ``stop`` stops accepting, lets accepted streams finish
within a grace period, then cuts the rest (each still gets an ERROR TEXT and CLOSE).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from service.log import log_event
from service.mrd.protocol import Limits
from service.mrd.session import DEFAULT_LIMITS, ENGINE_WAIT_S, MrdSession

logger = logging.getLogger("mrdserve.mrd")

READ_BUFFER_BYTES = 1 << 20


class MrdServer:
    """Listens on ``host:port`` and serves MRD streams with ``engine`` (started elsewhere)."""

    def __init__(self, engine: Any, host: str = "0.0.0.0", port: int = 9002, *, limits: Limits = DEFAULT_LIMITS,
                 engine_wait_s: float = ENGINE_WAIT_S) -> None:
        self.engine, self.host, self.requested_port = engine, host, port
        self.limits, self.engine_wait_s = limits, engine_wait_s
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        """The bound port (the real one when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self.requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.requested_port,
                                                  limit=READ_BUFFER_BYTES)
        log_event(logger, "mrd_listening", host=self.host, port=self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await MrdSession(reader, writer, self.engine, limits=self.limits,
                             engine_wait_s=self.engine_wait_s).run()
        finally:
            self._sessions.discard(task)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting; wait up to ``grace_s`` for open streams to end, then cut them (ERROR + CLOSE)."""
        if self._server is not None:
            self._server.close()
        sessions = list(self._sessions)
        if sessions:
            log_event(logger, "mrd_draining", sessions=len(sessions), grace_s=grace_s)
            _, late = await asyncio.wait(sessions, timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        log_event(logger, "mrd_stopped")

    async def __aenter__(self) -> MrdServer:
        await self.start()
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.stop()
