"""Errors a client can cause with its data: every entry point maps them to a 4xx, an MRD/Gadgetron ERROR or a
CLI message, never to a 500. Messages name the field or dataset that is wrong, never a header value."""

from __future__ import annotations


class InputError(ValueError):
    """The input cannot be used; ``code`` is a stable machine-readable name (REST error codes)."""

    code = "invalid_input"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LimitError(InputError):
    """The input declares more than the configured budget allows (refused before anything is allocated)."""

    code = "beyond_limit"
