"""Structured JSON logs with request ids: one JSON object per line, machine-readable, no patient data.

Callers log events with fixed, non-identifying fields (``log_event(logger, "request", status=200, ...)``);
free-text header fields, names and upload file names are never passed in. The current request id lives in a
context variable so every line logged while serving a request carries it.

Text we do not write ourselves (library warnings, exception messages, error reasons) may quote a value it
failed on (``invalid literal for int(): 'Jane Doe'``): quoted passages in it are withheld before it is logged.
Warnings and uncaught exceptions (also in threads) go through the same JSON handler.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
import uuid
from typing import Any

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("mrdserve_request_id", default="")

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# a quoted passage opens after a non-word character (so "acquisition's" is no opening quote) and closes before one
_QUOTED = re.compile(r"(?<!\w)(?:`[^`]*`|'[^']*'|\"[^\"]*\")(?!\w)")
_FRAME = re.compile(r'^\s*File "[^"]*", line \d+')
_FREE_TEXT_FIELDS = ("error", "reason", "exception")
WITHHELD = "<withheld>"


def withhold_quoted(text: str) -> str:
    """``text`` with every quoted passage (backticks, single or double quotes) replaced by ``<withheld>``."""
    return _QUOTED.sub(WITHHELD, text)


def _withhold_in_traceback(text: str) -> str:
    """A traceback with quoted passages withheld everywhere but in its frame lines (file, line, function)."""
    return "\n".join(line if _FRAME.match(line) else withhold_quoted(line) for line in text.splitlines())


def new_request_id() -> str:
    """A short random id for a request (hex, no meaning, safe to log and return to clients)."""
    return uuid.uuid4().hex[:16]


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, request id and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == "py.warnings":
            entry["message"] = withhold_quoted(entry["message"])
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in entry and not key.startswith("_"):
                entry[key] = withhold_quoted(value) if key in _FREE_TEXT_FIELDS and isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = _withhold_in_traceback(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(level: str | int = "info", stream: Any = None) -> None:
    """Route the root, mrdserve and uvicorn loggers to one JSON handler at ``level`` (idempotent)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old.formatter, JsonFormatter):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs each request, with its id
    logging.captureWarnings(True)  # library warnings become JSON lines (quoted values withheld)
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def _log_uncaught(kind: type[BaseException], value: BaseException | None, traceback: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value or kind(), traceback)
        return
    logging.getLogger("mrdserve").critical("uncaught_exception", exc_info=(kind, value, traceback),
                                           extra={"event": "uncaught_exception"})


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` (numbers, enums, ids; never patient data)."""
    logger.log(level, event, extra={"event": event, **fields})
