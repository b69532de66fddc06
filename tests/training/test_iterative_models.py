"""Trainer hooks for the iterative models: RIM's loss averages over its steps, DEQ's solver stats are reported,
and a few steps of rim / irim / deq configs train end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mrdserve.models.training.config import config_from_dict
from mrdserve.models.training.loop import PerStepOutputs, model_stats, train, training_loss

KWARGS = {
    "rim": {"n_steps": 2, "hidden": 8},
    "irim": {"n_steps": 2, "n_channels": 4, "n_layers": 2, "hidden": 8},
    "deq": {"n_filters": 8, "n_layers": 3, "max_iterations": 10, "tolerance": 1e-3, "export_iterations": 3},
    "deq-shine-opa": {"n_filters": 8, "n_layers": 3, "max_iterations": 10, "tolerance": 1e-3,
                      "export_iterations": 3, "backprop": "shine", "opa_every": 2},
}


def tiny_config(name: str, output_dir: Path) -> dict:
    """``name`` with tiny kwargs on 32x32 synthetic Cartesian data with 4 coils, 3 steps, validated at the end."""
    return {
        "name": f"tiny-{name}", "task": "cartesian2d-multicoil", "seed": 3,
        "network": {"name": name.split("-")[0], "kwargs": KWARGS[name]},
        "data": {"train_size": 2, "val_size": 1, "generator": {"matrix": 32, "coils": 4}},
        "optim": {"name": "adam", "lr": 1e-3, "grad_clip": 1.0},
        "loss": "l1",
        "loop": {"steps": 3, "batch_size": 1, "val_every": 0, "val_examples": 1, "checkpoint_every": 3,
                 "log_every": 1, "device": "cpu"},
        "output_dir": str(output_dir),
    }


@pytest.mark.parametrize("name", sorted(KWARGS))
def test_a_few_steps_of_each_iterative_model_train(name, tmp_path):
    result = train(config_from_dict(tiny_config(name, tmp_path)))
    assert result.step == 3 and len(result.losses) == 3 and all(math.isfinite(v) for v in result.losses)
    assert result.checkpoint is not None and "model" in result.metrics
    if name == "deq-shine-opa":  # the trainer hands the step's loss to the OPA updates
        assert result.model_stats["backward_iterations"] == 0
    elif name == "deq":
        assert set(result.model_stats) == {"forward_iterations", "residual"}
        assert 1 <= result.model_stats["forward_iterations"] <= 10 and result.model_stats["residual"] >= 0
    else:
        assert result.model_stats == {}


class _Batch:
    """The two things ``training_loss`` uses of a batch: ``crop`` and ``target``."""

    def __init__(self, target: torch.Tensor) -> None:
        self.target = target

    def crop(self, output: torch.Tensor) -> torch.Tensor:
        return output


def test_loss_of_per_step_outputs_is_their_mean():
    target = torch.zeros(1, 4, 4)
    outputs = [torch.full((1, 4, 4), value) for value in (1.0, 2.0, 6.0)]
    l1 = torch.nn.functional.l1_loss
    assert float(training_loss(l1, _Batch(target), outputs)) == pytest.approx(3.0)
    assert float(training_loss(l1, _Batch(target), outputs[1])) == pytest.approx(2.0)


def test_rim_is_trained_through_its_per_step_outputs():
    from mrdserve.models.nets.rim import RIM

    model = RIM(n_steps=3, hidden=4)
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 2, 8, 8, 2, generator=g), torch.ones(1, 1, 8, 8), torch.randn(1, 2, 8, 8, 2, generator=g))
    steps = PerStepOutputs(model)(*inputs)
    assert isinstance(steps, list) and len(steps) == 3
    assert torch.allclose(steps[-1], model(*inputs), atol=1e-6)


def test_model_stats_keeps_numbers_only():
    with_stats = torch.nn.Module()
    with_stats.last_stats = {"forward_iterations": 7, "residual": 1e-4, "note": "x", "flag": True}
    assert model_stats(with_stats) == {"forward_iterations": 7, "residual": 1e-4}
    assert model_stats(torch.nn.Linear(1, 1)) == {}
