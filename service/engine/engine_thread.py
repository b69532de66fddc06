"""An engine running on an event loop of its own thread, for blocking callers (the gadget, benchmarks).

Blocking threads submit coroutines with ``call``; every caller of one ``EngineThread`` shares the engine's
batchers, so gadget streams served in different threads batch together as MRD streams do, and none blocks another.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from mrdserve.service.engine.engine import Engine

T = TypeVar("T")
_THREADS: weakref.WeakKeyDictionary[Engine, EngineThread] = weakref.WeakKeyDictionary()
_THREADS_LOCK = threading.Lock()


class EngineThread:
    """``engine`` started (batchers, warm-up if configured) on a loop in a daemon thread; ``call`` runs a
    coroutine there and waits for its result."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mrdserve-engine", daemon=True)
        self._thread.start()
        self.call(engine.start())

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coroutine`` on the engine's loop; its result, or its exception re-raised here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish accepted work, shut the engine down and end the thread."""
        self.call(self.engine.shutdown(), timeout_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)


def engine_thread(engine: Engine) -> EngineThread:
    """The one ``EngineThread`` of ``engine`` in this process (started on first use)."""
    with _THREADS_LOCK:
        thread = _THREADS.get(engine)
        if thread is None:
            thread = _THREADS[engine] = EngineThread(engine)
        return thread
