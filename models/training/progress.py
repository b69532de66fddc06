"""Training progress: a tqdm bar on an interactive terminal, plain log lines otherwise."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

log = logging.getLogger("mrdserve.models.training.loop")  # the trainer's log lines, as before the split


def stderr_is_interactive() -> bool:
    """Whether stderr is a terminal (a progress bar makes sense there, not in a log file or a pipe)."""
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Training progress of rank 0: a tqdm bar on stderr (loss and samples/s beside tqdm's steps/s and ETA)
    when ``interactive``, else one log line per ``report`` (step, loss, samples/s, ETA). As a context manager
    it routes log records printed to the console through the bar (they do not break it) and closes it."""

    def __init__(self, total: int, initial: int, enabled: bool, interactive: bool) -> None:
        self.total, self.initial, self.enabled = total, initial, enabled
        self.bar: Any = None  # tqdm bar when interactive on rank 0
        self._redirect: contextlib.ExitStack | None = None
        if enabled and interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def __enter__(self) -> Progress:
        if self.bar is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = contextlib.ExitStack()
            self._redirect.enter_context(logging_redirect_tqdm())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._redirect is not None:
            self._redirect.close()
        self.close()

    def advance(self) -> None:
        """One step done."""
        if self.bar is not None:
            self.bar.update(1)

    def report(self, step: int, loss: float, stats: dict[str, float], samples_per_s: float,
               elapsed_s: float) -> None:
        """Show the loss, the model's stats and the throughput at ``step`` (``elapsed_s`` since this run began)."""
        if not self.enabled:
            return
        shown = {k: f"{v:.3g}" for k, v in stats.items()}
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.2f}", **shown, refresh=False)
            return
        done = step - self.initial
        eta = elapsed_s / done * (self.total - step) if done > 0 else 0.0
        extra = "".join(f", {k} {v}" for k, v in shown.items())
        log.info("step %d/%d: loss %.4f, %.2f samples/s, ETA %s%s", step, self.total, loss, samples_per_s,
                 _duration(eta), extra)

    def close(self) -> None:
        """Leave the bar at its last state (idempotent)."""
        if self.bar is not None:
            self.bar.close()
