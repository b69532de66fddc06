"""DistributedDataParallel on two CPU processes (torchrun, gloo) against one process on the same examples.

One ``torchrun --nproc-per-node=2`` launch of ``tests/training/ddp_worker.py`` serves every test here. Two ranks
of one example each take the step one process takes on both examples: DDP averages the ranks' gradients and
the L1 loss is a mean over the batch, so the averaged gradient is the gradient of the two-example mean.
Differences are float32 rounding only (the order of sums): seen, gradients within 3e-8 of each other (largest
entry 0.26), parameters after 4 steps within 4e-9; the tolerances below allow some 30-300x that.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from mrdserve.models.training.checkpoint import load_checkpoint
from mrdserve.models.training.config import TrainConfig, config_from_dict
from mrdserve.models.training.loop import train
from tests.training.ddp_worker import GLOBAL_BATCH, first_step_gradients, tiny_xpdnet_config

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_TIMEOUT_S = 120
GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-6  # per gradient entry (largest entries ~0.3)
PARAM_ATOL = 1e-6  # any parameter entry after 4 steps (learning rate 3e-3, clipped gradients)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _launch(out: Path) -> None:
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # both ranks on this host: loopback, whatever the hostname says
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
               "--master-addr=127.0.0.1", f"--master-port={_free_port()}",
               "-m", "tests.training.ddp_worker", str(out)]
    # its own session, so that a hung launch is ended with its worker processes (torchrun's children)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun did not finish in {LAUNCH_TIMEOUT_S} s:\n{stderr[-3000:]}")
    assert process.returncode == 0, f"torchrun failed ({process.returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}"


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The single-process references, then the one two-rank launch (which resumes one of them)."""
    base = tmp_path_factory.mktemp("ddp")
    out = base / "ddp"
    out.mkdir()
    single = base / "single"
    def config(directory: Path, **loop: Any) -> TrainConfig:
        return config_from_dict(tiny_xpdnet_config(directory, **loop))

    references = {
        "grads": first_step_gradients(config(single / "grads", steps=1)),
        "rank0_alone": first_step_gradients(config(single / "alone", steps=1, batch_size=1)),
        "run": train(config(single / "reference"), interactive=False),
        "reference_dir": single / "reference",
        "half": train(config(out / "from_single", steps=2), interactive=False),  # what the ranks resume
    }
    _launch(out)
    return {"out": out, **references}


def _results(out: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads((out / f"{name}_rank{rank}.json").read_text()) for rank in range(2)]


def _assert_parameters_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=PARAM_ATOL, msg=key)


def test_ddp_gradients_equal_one_process_on_the_concatenated_batch(ddp_run):
    ranks = [torch.load(ddp_run["out"] / f"grads_rank{r}.pt", weights_only=True) for r in range(2)]
    single, alone = ddp_run["grads"], ddp_run["rank0_alone"]
    assert [r["world_size"] for r in ranks] == [2, 2] and single["world_size"] == 1
    assert single["grads"].keys() == ranks[0]["grads"].keys() == ranks[1]["grads"].keys()
    assert len(single["grads"]) > 10
    for key, expected in single["grads"].items():
        torch.testing.assert_close(ranks[0]["grads"][key], ranks[1]["grads"][key], rtol=0, atol=0, msg=key)
        torch.testing.assert_close(ranks[0]["grads"][key], expected, rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=key)
    assert ranks[0]["loss"] == pytest.approx(single["loss"], rel=1e-6)
    # the all-reduce mattered: rank 0's own example alone gives clearly different gradients
    flat = torch.cat([g.flatten() for g in single["grads"].values()])
    own = torch.cat([g.flatten() for g in alone["grads"].values()])
    assert float((own - flat).norm() / flat.norm()) > 0.05


def test_single_process_checkpoint_resumes_under_ddp(ddp_run):
    assert ddp_run["half"].step == 2
    for result in _results(ddp_run["out"], "from_single"):
        assert result["resumed_from"] == 2 and result["step"] == 4 and len(result["losses"]) == 2
        assert result["losses"] == pytest.approx(ddp_run["run"].losses[2:], rel=1e-4)
    saved = load_checkpoint(ddp_run["out"] / "from_single")
    assert saved["step"] == 4 and saved["scheduler_state"]["last_epoch"] == 4
    _assert_parameters_close(saved["model_state"], load_checkpoint(ddp_run["reference_dir"])["model_state"])


def test_ddp_checkpoint_resumes_in_one_process(ddp_run):
    directory = ddp_run["out"] / "from_ddp"
    results = _results(ddp_run["out"], "from_ddp")
    assert [r["step"] for r in results] == [2, 2] and results[0]["losses"] == results[1]["losses"]
    assert results[0]["losses"] == pytest.approx(ddp_run["run"].losses[:2], rel=1e-4)
    assert sorted(p.name for p in directory.glob("step_*.pt")) == ["step_00000002.pt"]  # rank 0 alone writes
    assert load_checkpoint(directory)["step"] == 2
    resumed = train(config_from_dict(tiny_xpdnet_config(directory, batch_size=GLOBAL_BATCH)), interactive=False)
    assert resumed.resumed_from == 2 and resumed.step == 4
    assert resumed.losses == pytest.approx(ddp_run["run"].losses[2:], rel=1e-4)
    _assert_parameters_close(load_checkpoint(directory)["model_state"],
                             load_checkpoint(ddp_run["reference_dir"])["model_state"])
