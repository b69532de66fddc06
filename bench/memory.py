"""Peak training memory of RIM vs i-RIM at 1, 4 and 8 steps, and DEQ's JFB vs full backprop.

One training step (forward, loss, backward, optimiser step) at batch 1 on a single-coil 320x320 Cartesian
example, each configuration in a fresh subprocess, after a warm-up step on a 32x32 example (so gradients and
optimiser state, which grow with the parameter count, already exist and the step's activations are what grows).
Memory is the peak of tensor memory allocated during the step over what was allocated before it (parameters,
gradients, optimiser state excluded): on CUDA ``torch.cuda.max_memory_allocated``; on CPU the running sum of the
allocator's allocation/free events recorded by ``torch.profiler`` (``profile_memory=True``) over a second,
identical step, so that the profiler costs neither the timed step nor its resident set. The growth of the peak
resident set (``resource.getrusage`` maxrss) in the timed step, which also holds allocator caching, is printed
for reference. i-RIM has 10 invertible layers per
step and trains with invertible backpropagation (target, as the i-RIM paper's Table 1: memory at 8 steps within
1.15x of 1 step, while RIM grows with the steps). The DEQ pair runs the same number of forward iterations
(plain iteration, no early stop): JFB differentiates one application of T, full backprop all of them.

Run: ``.venv/bin/python bench/memory.py [--matrix 320] [--deq-iterations 10] [--device cpu]``. Last line:
``irim_mem_ratio_8v1=<x> rim_mem_ratio_8v1=<x> jfb_time_ratio=<x> jfb_mem_ratio=<x>`` (JFB over full).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

STEPS = (1, 4, 8)

CHILD = r"""
import json, resource, sys, time
import torch
from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.nets.complex import complex_to_real
from mrdserve.models.nets.registry import build_network
from mrdserve.models.physics.fft import fft2c
from mrdserve.models.physics.masks import EquispacedFractionMask

name, kwargs, matrix, device = json.loads(sys.argv[1])
device = torch.device(device)
torch.manual_seed(0)
def example(n):
    image = torch.as_tensor(complex_phantom_2d((n, n), seed=0)).to(torch.complex64)
    mask = EquispacedFractionMask([0.08], [4])(n, seed=0).kspace_mask().to(torch.float32)  # [ky, 1]
    mask = mask.reshape(1, 1, n, 1).expand(1, 1, n, n).contiguous()
    kspace = mask * fft2c(image)[None, None]
    scale = float(kspace.abs().max())
    inputs = [complex_to_real(kspace / scale), mask, complex_to_real(torch.ones_like(kspace))]
    return [x.to(device) for x in inputs], (image.abs() / scale)[None].to(device)

model = build_network(name, **kwargs).to(device).train()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

def step(inputs, target):
    outputs = model.forward_steps(*inputs) if hasattr(model, "forward_steps") else [model(*inputs)]
    loss = torch.stack([torch.nn.functional.l1_loss(out, target) for out in outputs]).mean()
    optimizer.zero_grad(set_to_none=False)  # keep the gradients allocated in the warm-up step
    loss.backward()
    optimizer.step()

def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

def profiled_tensor_peak_mb(inputs, target):
    # Peak of the running sum of CPU allocator events (bytes, frees negative) during one step, in MB.
    from torch.profiler import ProfilerActivity, profile
    from torch._C._profiler import _EventType
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(inputs, target)
    events, pending = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            events.append((event.start_time_ns, event.extra_fields.alloc_size))
        pending.extend(event.children)
    running = peak = 0
    for _, size in sorted(events):
        running += size
        peak = max(peak, running)
    return peak / 2**20

step(*example(32))  # warm-up on a small matrix: gradients and Adam state exist, activations stay small
inputs, target = example(matrix)
sync()
before = rss_mb()
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / 2**20
start = time.perf_counter()
step(inputs, target)
sync()
seconds = time.perf_counter() - start
rss = rss_mb() - before
if device.type == "cuda":
    tensor = torch.cuda.max_memory_allocated() / 2**20 - base
else:
    tensor = profiled_tensor_peak_mb(inputs, target)
print(json.dumps({"step_s": seconds, "memory_mb": tensor, "rss_mb": rss,
                  "params": sum(p.numel() for p in model.parameters()), "stats": getattr(model, "last_stats", {})}))
"""


def configurations(deq_iterations: int) -> list[tuple[str, str, dict]]:
    """(label, network, kwargs) of every measured configuration."""
    rows = [(f"rim-{n}", "rim", {"n_steps": n, "hidden": 64}) for n in STEPS]
    rows += [(f"irim-{n}", "irim", {"n_steps": n, "n_layers": 10, "invertible_backprop": True}) for n in STEPS]
    deq = {"n_filters": 32, "n_layers": 4, "max_iterations": deq_iterations, "tolerance": 0.0, "anderson_memory": 0}
    rows += [("deq-jfb", "deq", deq | {"backprop": "jfb"}), ("deq-full", "deq", deq | {"backprop": "full"})]
    return rows


def measure(network: str, kwargs: dict, matrix: int, device: str) -> dict:
    """One training step of ``network`` in a fresh interpreter."""
    root = Path(__file__).resolve().parents[1]
    completed = subprocess.run([sys.executable, "-c", CHILD, json.dumps([network, kwargs, matrix, device])],
                               cwd=root, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{network} {kwargs} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, default=320)
    parser.add_argument("--deq-iterations", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    results = {}
    print(f"one training step, batch 1, single coil {args.matrix}x{args.matrix}, {args.device}")
    print(f"{'configuration':<12} {'params':>9} {'step s':>8} {'tensor MB':>10} {'RSS MB':>8}")
    for label, network, kwargs in configurations(args.deq_iterations):
        results[label] = measure(network, kwargs, args.matrix, args.device)
        row = results[label]
        print(f"{label:<12} {row['params']:>9} {row['step_s']:>8.2f} {row['memory_mb']:>10.1f} {row['rss_mb']:>8.1f}",
              flush=True)
    print(f"\n{'steps':>5} {'RIM MB':>9} {'i-RIM MB':>9} {'RIM RSS':>9} {'i-RIM RSS':>10}")
    for n in STEPS:
        rim, irim = results[f"rim-{n}"], results[f"irim-{n}"]
        print(f"{n:>5} {rim['memory_mb']:>9.1f} {irim['memory_mb']:>9.1f} {rim['rss_mb']:>9.1f} "
              f"{irim['rss_mb']:>10.1f}")

    def ratio(a: float, b: float) -> float:
        return a / max(b, 1e-9)

    irim = ratio(results["irim-8"]["memory_mb"], results["irim-1"]["memory_mb"])
    rim = ratio(results["rim-8"]["memory_mb"], results["rim-1"]["memory_mb"])
    jfb_time = ratio(results["deq-jfb"]["step_s"], results["deq-full"]["step_s"])
    jfb_mem = ratio(results["deq-jfb"]["memory_mb"], results["deq-full"]["memory_mb"])
    print(f"\nDEQ, {args.deq_iterations} forward iterations: JFB/full step time {jfb_time:.3f}, peak tensor memory "
          f"{jfb_mem:.3f}")
    print(f"irim_mem_ratio_8v1={irim:.3f} rim_mem_ratio_8v1={rim:.3f} jfb_time_ratio={jfb_time:.3f} "
          f"jfb_mem_ratio={jfb_mem:.3f}")


if __name__ == "__main__":
    main()
