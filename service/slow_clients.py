"""Guards against idle and slow HTTP clients: connections that never finish their request headers, and request
bodies that stop arriving, are closed after ``read_timeout_s`` (a connection cap is uvicorn's
``limit_concurrency``, a 503 beyond it).

uvicorn closes idle keep-alive connections only after a first response, and never times out a request whose
headers or body trickle in (one byte a second held a connection for as long as the client liked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def guarded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol closing a connection whose request headers are not complete ``header_timeout_s``
    after it opened or after its last response."""

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
                self._disarm()  # a new request's headers arrived

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            # IDLE: no request has begun (a pipelined one that did is running, not slow)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


class BodyReadTimeout:
    """ASGI middleware: while a request body is incomplete, each ``receive`` waits at most ``timeout_s``; then
    ``on_timeout`` (an exception to raise, which the app maps to 408) ends the request."""

    def __init__(self, app: Any, timeout_s: float, on_timeout: Callable[[float], Exception]) -> None:
        self.app, self.timeout_s, self.on_timeout = app, timeout_s, on_timeout

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False

        async def bounded_receive() -> dict:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                raise self.on_timeout(self.timeout_s) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded_receive, send)
