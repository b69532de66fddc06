"""Stage-wise training in the trainer (``loop.stagewise``, KIKI-net): each stage changes only its own block, the
steps after the stages train every block, the run ends with every parameter trainable, and a run resumed in the
middle of a stage or at a stage's boundary continues exactly as the uninterrupted one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mrdserve.models.training.checkpoint import load_checkpoint
from mrdserve.models.training.config import config_from_dict
from mrdserve.models.training.loop import build_run, train, train_steps

STEPS_PER_STAGE = 2
BLOCKS = ("kspace_nets.0.", "image_nets.0.", "kspace_nets.1.", "image_nets.1.")  # stages 0-3, in K, I, K, I order


def tiny_config(output_dir: Path, steps: int = 10, **loop) -> dict:
    """A small KIKI-net (4 blocks of 2 conv layers, 4 filters) on 24x24 two-coil Cartesian data: 4 stages of 2
    steps, then the joint steps left of ``steps``; a checkpoint every step."""
    return {
        "name": "stagewise", "task": "cartesian2d-multicoil", "seed": 3,
        "network": {"name": "kikinet", "kwargs": {"n_iter": 2, "n_layers": 2, "n_filters": 4}},
        "preparation": {"name": "cartesian-sense", "params": {"sensitivities": "acs"}},
        "data": {"train_size": 3, "val_size": 0, "generator": {"matrix": 24, "coils": 2, "acceleration": 4,
                                                                "center_fraction": 0.25}},
        "optim": {"name": "adam", "lr": 1e-2, "grad_clip": 1.0},
        "loss": "l1",
        "loop": {"steps": steps, "val_every": 0, "val_examples": 0, "checkpoint_every": 1, "log_every": 5,
                 "device": "cpu", "stagewise": {"steps_per_stage": STEPS_PER_STAGE}, **loop},
        "output_dir": str(output_dir),
    }


def _changed_blocks(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {block for block in BLOCKS for key in before if key.startswith(block)
            and not torch.equal(before[key], after[key])}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor], object, object]:
    out = tmp_path_factory.mktemp("full")
    run = build_run(config_from_dict(tiny_config(out)), resume=False)
    initial = {key: value.clone() for key, value in run.model.state_dict().items()}
    return out, initial, run, train_steps(run)


def test_each_stage_changes_only_its_own_block_then_every_block_trains(full_run):
    out, initial, _, result = full_run
    assert result.step == 10 and len(result.losses) == 10
    states = [initial] + [load_checkpoint(out / f"step_{step:08d}.pt")["model_state"] for step in (2, 4, 6, 8, 10)]
    for stage, block in enumerate(BLOCKS):
        assert _changed_blocks(states[stage], states[stage + 1]) == {block}, stage
    assert _changed_blocks(states[4], states[5]) == set(BLOCKS)  # steps 9-10: joint


def test_the_run_ends_with_every_parameter_trainable_and_every_block_run(full_run):
    _, _, run, _ = full_run
    assert all(p.requires_grad for p in run.model.parameters())
    assert run.model.active_blocks == 4 and run.model.training_stage is None
    assert run.stage is None and len(run.optimizer.param_groups[0]["params"]) == len(list(run.model.parameters()))


def _interrupted_copy(out: Path, directory: Path, stopped_at: int) -> Path:
    """The full run's directory as a run interrupted after step ``stopped_at`` would have left it."""
    shutil.copytree(out, directory)
    for path in directory.glob("step_*.pt"):
        if int(path.stem.split("_")[1]) > stopped_at:
            path.unlink()
    shutil.copyfile(directory / f"step_{stopped_at:08d}.pt", directory / "latest.pt")
    return directory


@pytest.mark.parametrize("stopped_at", [5, 4], ids=["mid-stage", "stage-boundary"])
def test_a_resumed_run_continues_in_the_right_stage(full_run, tmp_path, stopped_at):
    """Step 5 is the middle of stage 2 (steps 5-6); after step 4 the checkpoint holds stage 1's optimiser."""
    out, _, _, result = full_run
    interrupted = _interrupted_copy(out, tmp_path / "run", stopped_at)
    resumed = train(config_from_dict(tiny_config(interrupted)))
    assert resumed.resumed_from == stopped_at and resumed.losses == pytest.approx(result.losses[stopped_at:], abs=1e-6)
    expected, final = load_checkpoint(out)["model_state"], load_checkpoint(interrupted)["model_state"]
    for key in expected:
        torch.testing.assert_close(final[key], expected[key], rtol=0, atol=1e-6, msg=key)


def test_resume_refuses_a_changed_stage_schedule(full_run, tmp_path):
    interrupted = _interrupted_copy(full_run[0], tmp_path / "run", 3)
    for stagewise in (None, {"steps_per_stage": 1}):
        changed = tiny_config(interrupted)
        changed["loop"]["stagewise"] = stagewise
        with pytest.raises(ValueError, match=r"loop\.stagewise: the run in"):
            train(config_from_dict(changed))
