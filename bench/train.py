"""Training step time and peak memory of XPDNet and NC-PDNet at batch 1, with and without gradient checkpointing.

Each configuration runs in a fresh subprocess: on CPU, memory is the growth of the peak resident set
(``resource.getrusage`` maxrss) over the training steps, measured after the model, optimiser and a pre-made
example are set up (the example is prepared in the parent so preparation never sets the peak); on
CUDA it is ``torch.cuda.max_memory_allocated``. Last line: ``ckpt_memory_ratio=<with/without>`` (mean of both
networks) plus per-network ratios and step-time ratios.

Run: ``.venv/bin/python bench/train.py [--matrix 96] [--coils 8] [--steps 3] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

NETWORKS = {
    "xpdnet": ("cartesian2d-multicoil", {"n_iter": 5, "n_primal": 5, "preset": "small"}),
    "ncpdnet": ("noncartesian2d-multicoil", {"n_iter": 10, "n_primal": 5, "n_filters": 32, "multicoil": True}),
}

CHILD = r"""
import json, resource, sys, time
import torch
from mrdserve.models.nets.registry import build_network
from mrdserve.models.training.datasets import collate_examples
from mrdserve.models.training.loop import enable_gradient_checkpointing
from mrdserve.models.training.losses import get_loss

name, batch_file, kwargs, steps, ckpt, device = json.loads(sys.argv[1])
device = torch.device(device)
torch.manual_seed(0)
torch.set_num_threads(torch.get_num_threads())
model = build_network(name, **kwargs).to(device)
if ckpt:
    enable_gradient_checkpointing(model)
batch = collate_examples([torch.load(batch_file, weights_only=False)]).to(device)
optimizer = torch.optim.RAdam(model.parameters(), lr=1e-4)
loss_fn = get_loss("compound")

def step():
    loss = loss_fn(batch.crop(model(**batch.inputs)), batch.target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()

def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

sync()
before = rss_mb()  # model, optimiser and the (pre-made) example only: the peak so far is small
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / 2**20
times = []
for _ in range(steps + 1):  # the first step (optimiser state, allocator warm-up) is not timed
    start = time.perf_counter()
    step()
    sync()
    times.append(time.perf_counter() - start)
after = rss_mb()
if device.type == "cuda":
    peak = torch.cuda.max_memory_allocated() / 2**20
    memory, absolute = peak - base, peak
else:
    memory, absolute = after - before, after
times = times[1:]
print(json.dumps({"step_s": sorted(times)[len(times) // 2], "memory_mb": memory, "peak_mb": absolute,
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def _example_file(name: str, matrix: int, coils: int, directory: Path) -> Path:
    """Prepare one synthetic example here, so data preparation never counts in a child's peak memory."""
    import torch

    from mrdserve.models.training.datasets import SyntheticDataset

    path = directory / f"{name}.pt"
    torch.save(SyntheticDataset(NETWORKS[name][0], 1, matrix=matrix, coils=coils)[0], path)
    return path


def _run(name: str, example: Path, steps: int, checkpointing: bool, device: str) -> dict:
    payload = json.dumps([name, str(example), NETWORKS[name][1], steps, checkpointing, device])
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", CHILD, payload], cwd=root, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} (checkpointing={checkpointing}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, default=96)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    memory_kind = "CUDA max allocated" if args.device.startswith("cuda") else "CPU maxrss growth"
    print(f"batch 1, {args.matrix}x{args.matrix}, {args.coils} coils, median of {args.steps} steps; "
          f"memory = {memory_kind} during training steps")
    print(f"{'network':<9}{'ckpt':>6}{'params':>10}{'step (s)':>10}{'train mem (MB)':>16}{'peak (MB)':>11}")
    ratios, time_ratios = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        examples = {name: _example_file(name, args.matrix, args.coils, Path(scratch)) for name in NETWORKS}
        runs = {(name, checkpointing): _run(name, examples[name], args.steps, checkpointing, args.device)
                for name in NETWORKS for checkpointing in (False, True)}
    for name in NETWORKS:
        results = {}
        for checkpointing in (False, True):
            r = runs[name, checkpointing]
            results[checkpointing] = r
            print(f"{name:<9}{'yes' if checkpointing else 'no':>6}{r['params']:>10}{r['step_s']:>10.3f}"
                  f"{r['memory_mb']:>16.1f}{r['peak_mb']:>11.1f}")
        ratios[name] = results[True]["memory_mb"] / max(results[False]["memory_mb"], 1e-9)
        time_ratios[name] = results[True]["step_s"] / results[False]["step_s"]
    mean_ratio = sum(ratios.values()) / len(ratios)
    print(" ".join([f"{n}_ckpt_memory_ratio={r:.3f}" for n, r in ratios.items()]
                   + [f"{n}_ckpt_time_ratio={r:.3f}" for n, r in time_ratios.items()]))
    print(f"ckpt_memory_ratio={mean_ratio:.3f}")


if __name__ == "__main__":
    main()
