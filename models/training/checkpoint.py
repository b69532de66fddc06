"""Training checkpoints in the ``mrdserve-checkpoint/1`` format: written atomically, read back for resume/export.

A checkpoint is a ``torch.save`` dict (see ``FORMAT``'s keys in ``build_checkpoint``) that loads with
``torch.load(..., weights_only=True)``: RNG states are stored as tensors and plain Python values. Each save
writes ``step_<step>.pt`` through a temporary file and ``os.replace`` (a crash never leaves a half-written
checkpoint), then points ``latest.pt`` at it the same way (a hard link where the file system allows).
"""

from __future__ import annotations

import datetime
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "mrdserve-checkpoint/1"
LATEST = "latest.pt"


def step_filename(step: int) -> str:
    """``step_00000042.pt``: sorts by step."""
    return f"step_{step:08d}.pt"


def git_commit() -> str | None:
    """The repository's HEAD commit, or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states, as tensors and plain values (weights_only-loadable)."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    rng: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    python = rng["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    numpy = rng["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu() for key, value in state.items()}


def build_checkpoint(*, config: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, scaler: Any, step: int, data: dict[str, str],
                     metrics: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dict of the contract for the current training state (``config`` already validated)."""
    return {
        "format": FORMAT,
        "network": {"name": config["network"]["name"], "kwargs": dict(config["network"]["kwargs"])},
        "task": config["task"],
        "preparation": {"name": config["preparation"]["name"], "params": dict(config["preparation"]["params"])},
        "model_state": _cpu_state(model.state_dict()),
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "scaler_state": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "step": int(step),
        "config": config,
        "seed": int(config["seed"]),
        "data": dict(data),
        "metrics": metrics,
        "rng": capture_rng(),
        "git_commit": git_commit(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace`` onto ``path``."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _atomic_alias(source: Path, alias: Path) -> None:
    """Make ``alias`` the same file as ``source`` atomically (hard link, or a copy where links fail)."""
    temporary = alias.with_name(f".{alias.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, alias)


def save_checkpoint(checkpoint: dict[str, Any], directory: str | Path) -> Path:
    """Write ``step_<step>.pt`` and ``latest.pt`` in ``directory`` atomically; returns the step file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / step_filename(int(checkpoint["step"]))
    atomic_torch_save(checkpoint, path)
    _atomic_alias(path, directory / LATEST)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file (or a run directory's ``latest.pt``) and check its format."""
    path = Path(path)
    if path.is_dir():
        path = path / LATEST
    return read_checked(path, FORMAT, map_location)


def read_checked(path: str | Path, expected_format: str, map_location: str | torch.device = "cpu",
                 what: str = "checkpoint") -> dict[str, Any]:
    """The dict saved at ``path`` (tensors only, ``weights_only``) whose ``format`` is ``expected_format``;
    ValueError naming ``what`` and the file when it is missing, unreadable or of another format."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ValueError(f"{what} {str(path)!r} could not be read: {exc}") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != expected_format:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{what} {str(path)!r}: format must be {expected_format!r}, got {found!r}")
    return checkpoint


def latest_checkpoint(directory: str | Path) -> Path | None:
    """``directory/latest.pt`` if it exists, else None."""
    path = Path(directory) / LATEST
    return path if path.is_file() else None
