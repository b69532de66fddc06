"""Worker of tests/training/test_ddp.py: two CPU ranks (gloo) of the real training code.

Launched as ``torchrun --nproc-per-node=2 -m tests.training.ddp_worker OUT`` from the repository root, each rank
(1) writes ``OUT/grads_rank<r>.pt``: the gradients of the first step under DDP (one example per rank), and the
step's loss averaged over the ranks; (2) resumes ``OUT/from_single`` (a single-process run the test stopped at
step 2) up to step 4; (3) trains ``OUT/from_ddp`` from scratch up to step 2 (the test resumes it in one
process). (2) and (3) write ``OUT/<name>_rank<r>.json`` with what ``train`` returned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from mrdserve.models.training.config import TrainConfig, config_from_dict
from mrdserve.models.training.distributed import mean_over_ranks
from mrdserve.models.training.loop import build_run, forward_backward, train

GLOBAL_BATCH = 2  # examples per step: one process with batch_size 2, or two ranks with batch_size 1


def tiny_xpdnet_config(output_dir: Path, **loop: Any) -> dict[str, Any]:
    """XPDNet (2 iterations, small MWCNN) on 4 synthetic 32x32 two-coil Cartesian slices, L1 loss, CPU."""
    return {
        "name": "ddp", "task": "cartesian2d-multicoil", "seed": 11,
        "network": {"name": "xpdnet", "kwargs": {"n_iter": 2, "n_primal": 2, "preset": "small"}},
        "preparation": {"name": "cartesian-sense", "params": {"sensitivities": "acs"}},
        "data": {"train_size": 4, "val_size": 0, "generator": {"matrix": 32, "coils": 2}},
        "optim": {"name": "radam", "lr": 3e-3, "grad_clip": 1.0, "scheduler": "step",
                  "scheduler_params": {"step_size": 3, "gamma": 0.5}},
        "loss": "l1",
        "loop": {"steps": 4, "batch_size": GLOBAL_BATCH, "val_every": 0, "val_examples": 0, "checkpoint_every": 2,
                 "log_every": 1, "device": "cpu", **loop},
        "output_dir": str(output_dir),
    }


def first_step_gradients(config: TrainConfig) -> dict[str, Any]:
    """The parameter gradients (name -> tensor) and the loss (mean over ranks) of the run's first step."""
    run = build_run(config, resume=False)
    try:
        run.network.train()
        loss = forward_backward(run, next(iter(run.loader)))
        grads = {name: p.grad.detach().clone() for name, p in run.model.named_parameters() if p.grad is not None}
        return {"grads": grads, "loss": mean_over_ranks(loss, run.dist), "rank": run.dist.rank,
                "world_size": run.dist.world_size}
    finally:
        if run.writer is not None:
            run.writer.close()


def _write_result(path: Path, result: Any) -> None:
    path.write_text(json.dumps({"step": result.step, "resumed_from": result.resumed_from,
                                "losses": result.losses, "checkpoint": str(result.checkpoint)}))


def main(out: Path) -> None:
    per_rank = GLOBAL_BATCH // 2
    # (1) also starts the process group (build_run -> init_distributed); the train() calls below join it
    def config(name: str, **loop: Any) -> TrainConfig:
        return config_from_dict(tiny_xpdnet_config(out / name, batch_size=per_rank, **loop))

    gradients = first_step_gradients(config("grads", steps=1))
    rank = gradients["rank"]
    torch.save(gradients, out / f"grads_rank{rank}.pt")
    _write_result(out / f"from_single_rank{rank}.json", train(config("from_single"), interactive=False))
    _write_result(out / f"from_ddp_rank{rank}.json", train(config("from_ddp", steps=2), interactive=False))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
