"""Give freed memory back to the operating system.

After a large request CPython and numpy free their buffers, but glibc keeps the freed pages in its heaps
(a 2 GB upload left 2 GB resident per request). ``release_memory`` asks glibc to return them
(``malloc_trim``); every entry point calls it when a request or stream ends, accepted or refused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

_lock = threading.Lock()
_libc: list[object] = []


def _malloc_trim() -> object | None:
    if not _libc:
        try:
            library = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            trim = library.malloc_trim
            trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
            _libc.append(trim)
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
            _libc.append(None)
    return _libc[0]


def release_memory() -> None:
    """Return the C heaps' free pages to the operating system (a no-op where libc has no ``malloc_trim``)."""
    trim = _malloc_trim()
    if trim is not None:
        with _lock:
            trim(0)  # type: ignore[operator]
