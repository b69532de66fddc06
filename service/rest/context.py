"""Request context: a request id per request (``X-Request-ID``, the client's when it is sane) and one JSON log line
per request."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mrdserve.service.log import log_event, new_request_id, request_id_var

logger = logging.getLogger("mrdserve.api")  # every module of the REST API logs as this one logger


class RequestContext:
    """Pure ASGI middleware: a request id per request (``X-Request-ID``), and one JSON log line per request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 64 and given.replace("-", "").isalnum() else new_request_id()
        token = request_id_var.set(request_id)
        started, status = time.perf_counter(), {"code": 500}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_event(logger, "request", method=scope["method"], path=scope["path"], status=status["code"],
                      duration_ms=round(1000 * (time.perf_counter() - started), 2))
            request_id_var.reset(token)
