"""Give freed memory back to the operating system.

After a large request CPython and numpy free their buffers, but glibc keeps the freed pages in its heaps
(a 2 GB upload left 2 GB resident per request). ``release_memory`` asks glibc to return them
(``malloc_trim``); every entry point calls it when a request or stream ends, accepted or refused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from typing import Any

_lock = threading.Lock()


@functools.cache
def _malloc_trim() -> Any:
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_memory() -> None:
    """Return the C heaps' free pages to the operating system (a no-op where libc has no ``malloc_trim``)."""
    trim = _malloc_trim()
    if trim is not None:
        with _lock:
            trim(0)
