"""bfloat16 mixed precision (``loop.mixed_precision: bf16``) on CPU: finite, close to float32, physics in float32.

Tolerances (bf16 keeps 8 significant bits, ~4e-3 relative): over 4 steps the per-step losses stay within 1e-2
(relative) of the float32 run's and the parameter updates within 5e-2 (relative, in norm) of float32's; seen
for both networks: losses within 1e-3, updates within 4e-3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mrdserve.models.nets.registry import build_network
from mrdserve.models.training.checkpoint import load_checkpoint
from mrdserve.models.training.config import config_from_dict
from mrdserve.models.training.loop import build_run, train
from mrdserve.models.training.precision import autocast_regions, enable_mixed_precision
from tests.training.ddp_worker import tiny_xpdnet_config
from tests.training.test_loop import tiny_config

LOSS_RTOL = 1e-2
UPDATE_RTOL = 5e-2

CONFIGS = {"xpdnet-cartesian": lambda out, **loop: tiny_xpdnet_config(out, **loop),
           "ncpdnet-radial": lambda out, **loop: tiny_config(out, **loop)}


def _initial_state(config: dict[str, Any]) -> dict[str, torch.Tensor]:
    run = build_run(config_from_dict(config), resume=False)
    if run.writer is not None:
        run.writer.close()
    return {key: value.clone() for key, value in run.model.state_dict().items()}


def _flat(state: dict[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
    return torch.cat([state[key].flatten() for key in keys])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bf16_steps_are_finite_and_close_to_float32(tmp_path: Path, name: str):
    make = CONFIGS[name]
    initial = _initial_state(make(tmp_path / "initial", steps=4))
    full = train(config_from_dict(make(tmp_path / "float32", steps=4)), interactive=False)
    mixed = train(config_from_dict(make(tmp_path / "bf16", steps=4, mixed_precision="bf16")), interactive=False)
    assert len(mixed.losses) == 4 and all(torch.isfinite(torch.tensor(mixed.losses)))
    assert mixed.losses != full.losses  # bfloat16 really ran: rounding differs
    assert mixed.losses == pytest.approx(full.losses, rel=LOSS_RTOL)
    float32_state, bf16_state = load_checkpoint(tmp_path / "float32")["model_state"], \
        load_checkpoint(tmp_path / "bf16")["model_state"]
    keys = [key for key, value in initial.items() if value.is_floating_point()]
    assert all(bf16_state[key].dtype == torch.float32 for key in keys)  # weights stay float32
    update = _flat(float32_state, keys) - _flat(initial, keys)
    difference = _flat(bf16_state, keys) - _flat(float32_state, keys)
    assert float(update.norm()) > 0
    assert float(difference.norm() / update.norm()) < UPDATE_RTOL


def test_conv_blocks_run_bf16_and_hand_float32_back_while_training():
    torch.manual_seed(0)
    model = build_network("xpdnet", n_iter=1, n_primal=2, preset="small")
    regions = autocast_regions(model)
    assert enable_mixed_precision(model, torch.device("cpu"), "bf16") == len(regions) > 0
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    seen: list[torch.dtype] = []
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    generator = torch.Generator().manual_seed(1)
    inputs = {"kspace": torch.rand(1, 2, 16, 16, 2, generator=generator), "mask": torch.ones(1, 1, 16, 16),
              "smaps": torch.rand(1, 2, 16, 16, 2, generator=generator)}
    output = model(**inputs)  # XPDNet's torch.complex would reject a bfloat16 conv output
    assert seen[-1] == torch.bfloat16 and output.dtype == torch.float32
    output.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        model(**inputs)
    assert seen[-1] == torch.float32  # validation / evaluation: float32


def test_a_network_without_plain_conv_blocks_warns_and_stays_float32():
    class Custom(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    with pytest.warns(UserWarning, match="trains in float32"):
        assert enable_mixed_precision(Custom(), torch.device("cpu"), "bf16") == 0


@pytest.mark.parametrize(("loop", "message"), [
    ({"mixed_precision": "fp8"}, "loop.mixed_precision: unknown value 'fp8'; expected one of none, bf16"),
    ({"mixed_precision": True}, "loop.mixed_precision: expected str"),
    ({"mixed_precision": "bf16", "amp": True}, "loop.mixed_precision: 'bf16' cannot be combined with loop.amp"),
])
def test_config_rejects_bad_mixed_precision(loop: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        config_from_dict({"name": "t", "task": "cartesian2d-multicoil", "loop": loop})


def test_mixed_precision_defaults_to_none():
    assert config_from_dict({"name": "t", "task": "cartesian2d-multicoil"}).loop.mixed_precision == "none"
