"""Checkpoint files: contract format, atomic writes, weights_only loading, RNG round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mrdserve.models.training import checkpoint as ckpt
from mrdserve.models.training.config import config_from_dict, config_to_dict


def _checkpoint(step: int) -> dict:
    torch.manual_seed(0)
    config = config_to_dict(config_from_dict({"name": "t", "task": "cartesian2d-multicoil", "seed": 3}))
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.RAdam(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
    return ckpt.build_checkpoint(config=config, model=model, optimizer=optimizer, scheduler=scheduler,
                                 scaler=torch.amp.GradScaler("cuda", enabled=False), step=step,
                                 data={"kind": "synthetic", "description": "d", "version": "v"},
                                 metrics={"model": {"psnr": 30.0}, "baselines": {}})


def test_save_and_load_round_trip(tmp_path):
    saved = _checkpoint(7)
    path = ckpt.save_checkpoint(saved, tmp_path)
    assert path.name == "step_00000007.pt" and (tmp_path / "latest.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "step_00000007.pt"]  # no temp files
    loaded = ckpt.load_checkpoint(tmp_path)  # a run directory means its latest.pt
    expected_keys = {"format", "network", "task", "preparation", "model_state", "optimizer_state",
                     "scheduler_state", "scaler_state", "step", "config", "seed", "data", "metrics", "rng",
                     "git_commit", "created"}
    assert set(loaded) == expected_keys
    assert loaded["format"] == "mrdserve-checkpoint/1" and loaded["step"] == 7 and loaded["seed"] == 3
    assert loaded["network"] == {"name": "xpdnet", "kwargs": {}} and loaded["scaler_state"] is None
    for key, value in saved["model_state"].items():
        torch.testing.assert_close(loaded["model_state"][key], value)
    torch.load(path, weights_only=True)  # loads without unpickling arbitrary objects


def test_latest_follows_the_newest_save(tmp_path):
    ckpt.save_checkpoint(_checkpoint(2), tmp_path)
    ckpt.save_checkpoint(_checkpoint(4), tmp_path)
    assert ckpt.load_checkpoint(tmp_path / "latest.pt")["step"] == 4
    assert ckpt.load_checkpoint(tmp_path / "step_00000002.pt")["step"] == 2


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "none.pt")
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="format must be 'mrdserve-checkpoint/1'"):
        ckpt.load_checkpoint(tmp_path / "x.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")


def test_rng_state_round_trip():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    np.random.standard_normal()  # leave a cached gaussian in numpy's state
    state = ckpt.capture_rng()
    first = (random.random(), float(np.random.standard_normal()), float(torch.rand(1)))
    ckpt.restore_rng(state)
    assert (random.random(), float(np.random.standard_normal()), float(torch.rand(1))) == first
