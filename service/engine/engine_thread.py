"""An engine running on an event loop of its own thread, for blocking callers (the gadget, benchmarks).

Blocking threads submit coroutines with ``call``; every caller of one ``EngineThread`` shares the engine's
batchers, so gadget streams served in different threads batch together as MRD streams do, and none blocks another.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from mrdserve.service.engine.engine import Engine

T = TypeVar("T")
_THREADS: dict[int, EngineThread] = {}  # by id(engine); an engine thread lives as long as the process
_THREADS_LOCK = threading.Lock()


class EngineThread:
    """``engine`` started (batchers, warm-up if configured) on a loop in a daemon thread; ``call`` runs a
    coroutine there and waits for its result."""

    def __init__(self, engine: Engine) -> None:
        if engine.ready:
            raise RuntimeError("the engine was started on another event loop: its batchers belong to that loop")
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mrdserve-engine", daemon=True)
        self._thread.start()
        try:
            self.call(engine.start())
        except BaseException:
            self._end_loop(5.0)
            raise

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coroutine`` on the engine's loop; its result, or its exception re-raised here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish accepted work, shut the engine down and end the thread."""
        self.call(self.engine.shutdown(), timeout_s)
        self._end_loop(timeout_s)

    def _end_loop(self, timeout_s: float) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)


def engine_thread(engine: Engine) -> EngineThread:
    """The one ``EngineThread`` of ``engine`` in this process (started on first use)."""
    with _THREADS_LOCK:
        thread = _THREADS.get(id(engine))
        if thread is None or thread.engine is not engine:
            thread = _THREADS[id(engine)] = EngineThread(engine)  # a failed start caches nothing
        return thread
