"""Training progress: a tqdm bar (loss, samples/s, ETA) on a terminal, plain log lines otherwise; no timings."""

from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path

import pytest

from mrdserve.models.training import progress
from mrdserve.models.training.config import config_from_dict
from mrdserve.models.training.loop import train
from mrdserve.models.training.progress import Progress, stderr_is_interactive
from tests.training.ddp_worker import tiny_xpdnet_config

LOGGER = "mrdserve.models.training.loop"
LOG_LINE = re.compile(r"step (\d+)/4: loss \d+\.\d{4}, \d+\.\d{2} samples/s, ETA \d+:\d{2}:\d{2}")


class Terminal(io.StringIO):
    """A captured stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _progress_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.getMessage().startswith("step ")]


def test_terminal_gets_a_progress_bar_with_loss_throughput_and_eta(tmp_path: Path, monkeypatch, caplog):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert stderr_is_interactive()
    caplog.set_level(logging.INFO, logger=LOGGER)
    train(config_from_dict(tiny_xpdnet_config(tmp_path, log_every=2)))
    text = terminal.getvalue()
    final = text.replace("\r", "\n").strip().splitlines()[-1]
    assert "4/4" in final and re.search(r"loss=\d+\.\d{4}", final) and re.search(r"samples_s=\d+\.\d{2}", final)
    assert re.search(r"\d{2}:\d{2}<\d{2}:\d{2}", final)  # elapsed<remaining (the ETA)
    assert _progress_lines(caplog) == []  # no log lines beside the bar


def test_pipe_or_file_gets_log_lines(tmp_path: Path, monkeypatch, caplog):
    captured = io.StringIO()  # isatty() is False, as for a pipe or a log file
    monkeypatch.setattr(sys, "stderr", captured)
    assert not stderr_is_interactive()
    caplog.set_level(logging.INFO, logger=LOGGER)
    result = train(config_from_dict(tiny_xpdnet_config(tmp_path, log_every=2)))
    lines = _progress_lines(caplog)
    assert [int(LOG_LINE.fullmatch(line).group(1)) for line in lines] == [2, 4], lines
    assert f"loss {result.losses[-1]:.4f}" in lines[-1] and lines[-1].endswith("ETA 0:00:00")
    assert captured.getvalue() == ""  # no bar drawn


def test_interactive_can_be_forced_either_way(tmp_path: Path, monkeypatch, caplog):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    caplog.set_level(logging.INFO, logger=LOGGER)
    train(config_from_dict(tiny_xpdnet_config(tmp_path, steps=2, log_every=1)), interactive=False)
    assert terminal.getvalue() == "" and len(_progress_lines(caplog)) == 2


def test_only_rank_zero_reports_and_odd_streams_are_not_terminals(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    silent = Progress(total=4, initial=0, enabled=False, interactive=True)
    assert silent.bar is None
    silent.report(1, 0.5, {}, 1.0, 1.0)
    silent.advance()
    silent.close()
    assert _progress_lines(caplog) == []
    monkeypatch.setattr(sys, "stderr", None)
    assert not stderr_is_interactive()
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    assert not stderr_is_interactive()


def test_log_line_eta_counts_only_the_steps_of_this_run(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    resumed = Progress(total=10, initial=6, enabled=True, interactive=False)
    resumed.report(8, 0.25, {"iterations": 7.0}, 3.0, elapsed_s=4.0)  # 2 steps in 4 s, 2 to go: 4 s
    assert _progress_lines(caplog) == ["step 8/10: loss 0.2500, 3.00 samples/s, ETA 0:00:04, iterations 7"]
    assert progress._duration(3725.4) == "1:02:05"
