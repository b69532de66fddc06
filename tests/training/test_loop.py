"""Training loop: checkpoints, exact resume (also after SIGKILL), loss decrease, gradient checkpointing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mrdserve.models.nets.registry import build_network
from mrdserve.models.training.checkpoint import load_checkpoint
from mrdserve.models.training.config import config_from_dict
from mrdserve.models.training.loop import StepSampler, enable_gradient_checkpointing, train

ROOT = Path(__file__).resolve().parents[2]


def tiny_config(output_dir: Path, **loop) -> dict:
    """NC-PDNet (2 iterations, 8 filters) on 32x32 synthetic radial data with 4 coils."""
    return {
        "name": "tiny", "task": "noncartesian2d-multicoil", "seed": 5,
        "network": {"name": "ncpdnet", "kwargs": {"n_iter": 2, "n_primal": 2, "n_filters": 8, "multicoil": True}},
        "preparation": {"name": "noncartesian-toeplitz"},
        "data": {"train_size": 3, "val_size": 1, "generator": {"matrix": 32, "coils": 4}},
        "optim": {"name": "radam", "lr": 3e-3, "grad_clip": 1.0, "scheduler": "step",
                  "scheduler_params": {"step_size": 3, "gamma": 0.5}},
        "loss": "l1",
        "loop": {"steps": 4, "batch_size": 2, "val_every": 0, "val_examples": 0, "checkpoint_every": 2,
                 "log_every": 1, "device": "cpu", **loop},
        "output_dir": str(output_dir),
    }


def _parameters(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model_state"]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_checkpoints_and_exact_resume(tmp_path):
    full = train(config_from_dict(tiny_config(tmp_path / "full")))
    assert full.step == 4 and len(full.losses) == 4
    assert sorted(p.name for p in (tmp_path / "full").glob("step_*.pt")) == ["step_00000002.pt", "step_00000004.pt"]
    saved = load_checkpoint(tmp_path / "full")
    assert saved["step"] == 4 and saved["data"]["kind"] == "synthetic" and len(saved["data"]["version"]) >= 8
    assert saved["scheduler_state"]["last_epoch"] == 4 and saved["config"]["name"] == "tiny"

    half = train(config_from_dict(tiny_config(tmp_path / "split", steps=2)))
    assert half.step == 2
    resumed = train(config_from_dict(tiny_config(tmp_path / "split")))
    assert resumed.resumed_from == 2 and resumed.step == 4
    assert resumed.losses == pytest.approx(full.losses[2:], abs=1e-6)
    _assert_same(_parameters(tmp_path / "full" / "latest.pt"), _parameters(tmp_path / "split" / "latest.pt"))
    # resuming a finished run does nothing; --no-resume starts over and reproduces the same run
    assert train(config_from_dict(tiny_config(tmp_path / "full"))).losses == []
    again = train(config_from_dict(tiny_config(tmp_path / "full")), resume=False)
    assert again.losses == pytest.approx(full.losses, abs=1e-6)


def test_resume_refuses_a_different_network(tmp_path):
    train(config_from_dict(tiny_config(tmp_path, steps=2)))
    changed = tiny_config(tmp_path)
    changed["network"]["kwargs"]["n_filters"] = 4
    with pytest.raises(ValueError, match="network"):
        train(config_from_dict(changed))


def test_zero_steps_from_init_from_saves_that_network_under_this_config(tmp_path):
    # a calibration stage: another config's weights, this config's network kwargs, no optimisation step
    train(config_from_dict(tiny_config(tmp_path / "source", steps=2)))
    target = tiny_config(tmp_path / "zero", steps=0, init_from=str(tmp_path / "source" / "latest.pt"))
    result = train(config_from_dict(target))
    assert result.step == 0 and result.losses == []
    _assert_same(_parameters(tmp_path / "source" / "latest.pt"), _parameters(tmp_path / "zero" / "latest.pt"))
    assert load_checkpoint(tmp_path / "zero")["config"]["loop"]["steps"] == 0
    with pytest.raises(ValueError, match=r"loop\.steps: must be > 0"):
        config_from_dict(tiny_config(tmp_path / "bad", steps=0))


def test_loss_decreases_and_validation_compares_with_baselines(tmp_path):
    config = tiny_config(tmp_path, steps=40, batch_size=1, checkpoint_every=40, val_every=40, val_examples=1)
    config["data"]["train_size"] = 2
    config["optim"].update(lr=1e-2, scheduler="none", scheduler_params={})
    result = train(config_from_dict(config))
    first, last = sum(result.losses[:6]) / 6, sum(result.losses[-6:]) / 6
    assert last < 0.7 * first, (first, last)
    metrics = load_checkpoint(tmp_path)["metrics"]
    assert metrics["step"] == 40 and set(metrics["model"]) >= {"psnr", "ssim", "nmse"}
    assert set(metrics["baselines"]) == {"zero-filled", "cg-sense", "l1-wavelet"}
    assert metrics["per_volume"][0]["volume"] == "synthetic-00000"
    assert (tmp_path / "tensorboard").is_dir()


KILLED_RUN = """
import sys
from mrdserve.models.training.config import config_from_dict
from mrdserve.models.training.loop import train
sys.path.insert(0, {tests!r})
from test_loop import tiny_config
train(config_from_dict(tiny_config({out!r}, steps=1000, batch_size=1, checkpoint_every=2)))
"""


def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    killed = tmp_path / "killed"
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), out=str(killed))
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (killed / "step_00000004.pt").exists():
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run wrote no checkpoint in time"
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    interrupted_at = load_checkpoint(killed)["step"]
    assert interrupted_at >= 4 and interrupted_at % 2 == 0
    target = interrupted_at + 2
    resumed = train(config_from_dict(tiny_config(killed, steps=target, batch_size=1, checkpoint_every=2)))
    assert resumed.resumed_from == interrupted_at and resumed.step == target
    reference = train(config_from_dict(tiny_config(tmp_path / "reference", steps=target, batch_size=1,
                                                   checkpoint_every=2)))
    assert resumed.losses == pytest.approx(reference.losses[interrupted_at:], abs=1e-6)
    _assert_same(_parameters(killed / "latest.pt"), _parameters(tmp_path / "reference" / "latest.pt"))


@pytest.mark.parametrize(("name", "kwargs", "inputs"), [
    ("ncpdnet", {"n_iter": 2, "n_primal": 2, "n_filters": 4},
     {"adjoint": (1, 16, 16, 2), "kernel": (1, 32, 32, 2)}),
    ("xpdnet", {"n_iter": 2, "n_primal": 2, "image_net": None},
     {"kspace": (1, 2, 16, 16, 2), "mask": (1, 1, 16, 16), "smaps": (1, 2, 16, 16, 2)}),
])
def test_gradient_checkpointing_keeps_outputs_gradients_and_state_dict(name, kwargs, inputs):
    if name == "xpdnet":
        kwargs = {**kwargs, "image_net": lambda i, o: torch.nn.Sequential(
            torch.nn.Conv2d(i, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, o, 3, padding=1))}
    torch.manual_seed(0)
    plain = build_network(name, **kwargs)
    torch.manual_seed(0)
    checkpointed = build_network(name, **kwargs)
    assert enable_gradient_checkpointing(checkpointed) == 2
    assert plain.state_dict().keys() == checkpointed.state_dict().keys()
    generator = torch.Generator().manual_seed(1)
    tensors = {key: torch.rand(shape, generator=generator) for key, shape in inputs.items()}
    outputs = [net(**tensors) for net in (plain, checkpointed)]
    torch.testing.assert_close(outputs[0], outputs[1])
    for output in outputs:
        output.square().sum().backward()
    for (key, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=key)


def test_step_sampler_splits_each_step_across_ranks():
    single = list(StepSampler(5, batch_size=4, seed=1, start_step=0, end_step=3))
    ranks = [list(StepSampler(5, batch_size=2, seed=1, start_step=0, end_step=3, rank=r, world_size=2))
             for r in range(2)]
    merged = [index for step in range(3) for r in range(2) for index in ranks[r][2 * step:2 * step + 2]]
    assert merged == single
    assert sorted(single[:5]) == list(range(5))  # each epoch is a permutation
    assert list(StepSampler(5, 4, 1, 2, 3)) == single[8:]  # resuming at step 2 draws what step 2 drew
