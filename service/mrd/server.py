"""The MRD streaming server: an asyncio TCP listener (Gadgetron's port 9002) running one ``MrdSession`` per
connection over a shared engine, so that every connection's slices meet in the same batchers.

``start`` binds (port 0 picks a free port, see ``port``); ``stop`` stops accepting, lets accepted streams finish
within a grace period, then cuts the rest (each still gets an ERROR TEXT and CLOSE).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import Any

from mrdserve.service.admission import Budget
from mrdserve.service.config import ServiceConfig
from mrdserve.service.log import log_event
from mrdserve.service.mrd.protocol import Limits, encode_close, encode_text
from mrdserve.service.mrd.session import DEFAULT_LIMITS, ENGINE_WAIT_S, READ_TIMEOUT_S, MrdSession

logger = logging.getLogger("mrdserve.mrd")

READ_BUFFER_BYTES = 1 << 20
DEFAULT_MAX_CONNECTIONS = ServiceConfig.max_connections
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class MrdServer:
    """Listens on ``host:port`` and serves MRD streams with ``engine`` (started elsewhere)."""

    def __init__(self, engine: Any, host: str = "0.0.0.0", port: int = 9002, *, limits: Limits = DEFAULT_LIMITS,
                 engine_wait_s: float = ENGINE_WAIT_S, budget: Budget | None = None,
                 read_timeout_s: float = READ_TIMEOUT_S, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 allow: list[Network] | None = None) -> None:
        self.engine, self.host, self.requested_port = engine, host, port
        self.budget = budget or Budget()
        # one message may be at most what a whole request may use
        self.limits = Limits(limits.max_text_bytes, min(limits.max_payload_bytes, self.budget.max_request_bytes))
        self.engine_wait_s, self.read_timeout_s = engine_wait_s, read_timeout_s
        self.max_connections, self.allow = max_connections, list(allow or [])
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        """The bound port (the real one when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self.requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def accepting(self) -> bool:
        """Whether new connections are accepted (False from the moment ``stop`` begins)."""
        return self._server is not None and self._server.is_serving()

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.requested_port,
                                                  limit=READ_BUFFER_BYTES)
        log_event(logger, "mrd_listening", host=self.host, port=self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        refusal = self._refusal(writer)
        if refusal is not None:
            await self._refuse(writer, refusal)
            return
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await MrdSession(reader, writer, self.engine, limits=self.limits, engine_wait_s=self.engine_wait_s,
                             budget=self.budget, read_timeout_s=self.read_timeout_s).run()
        finally:
            self._sessions.discard(task)

    def _refusal(self, writer: asyncio.StreamWriter) -> str | None:
        """Why a new connection is refused (not on the allow list, too many open), or None."""
        if self.allow:
            peer = writer.get_extra_info("peername")
            try:
                address = ipaddress.ip_address(peer[0]) if peer else None
            except ValueError:
                address = None
            if address is None or not any(address in network for network in self.allow):
                return "this address may not open MRD streams (MRDSERVE_MRD_ALLOW)"
        if len(self._sessions) >= self.max_connections:
            return (f"the server has {len(self._sessions)} open MRD streams, its limit (MRDSERVE_MAX_CONNECTIONS); "
                    f"retry later")
        return None

    async def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        log_event(logger, "mrd_refused", logging.WARNING, reason=reason)
        with contextlib.suppress(Exception):
            writer.write(encode_text(f"ERROR: {reason}") + encode_close())
            await asyncio.wait_for(writer.drain(), 5)
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 5)

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
