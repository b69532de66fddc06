"""NUFFT paths side by side: 320x320, 16 coils, radial 100 spokes x 640 samples, 2 threads, complex64.

Rows: torchkbnufft via NufftOp, finufft via NufftOp, finufft called directly (one cached Plan), and
the Toeplitz normal operator (FFTs only; chunked as shipped, and all coils in one FFT call).
Prints medians and, on the last line,
``toeplitz_speedup=<torchkbnufft fwd+adj / Toeplitz> finufft_overhead=<NufftOp finufft / raw, fwd+adj>``.
Run: ``.venv/bin/python bench/nufft.py``.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import finufft

from mrdserve.models.physics.density import pipe_menon_density
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.toeplitz import toeplitz_apply
from mrdserve.models.physics.trajectories import radial_2d

SHAPE = (320, 320)
N_COILS = 16
THREADS = 2
EPS = 1e-6


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median time of each function, measured round-robin so that load from other jobs hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    torch.set_num_threads(THREADS)
    gen = torch.Generator().manual_seed(0)
    traj = radial_2d(100, 640)
    t0 = time.perf_counter()
    density = pipe_menon_density(traj, SHAPE)
    density_s = time.perf_counter() - t0
    coils = torch.randn(1, N_COILS, *SHAPE, dtype=torch.complex64, generator=gen)
    data = torch.randn(1, N_COILS, traj.shape[1], dtype=torch.complex64, generator=gen)
    weights = density.to(torch.float32)

    ops = {name: NufftOp(traj, SHAPE, density=density, backend=name, eps=EPS)
           for name in ("torchkbnufft", "finufft")}
    t0 = time.perf_counter()
    kernel = ops["finufft"].toeplitz_kernel(weighted=True)
    kernel_s = time.perf_counter() - t0

    plan = finufft.Plan(2, SHAPE, n_trans=N_COILS, eps=EPS, isign=-1, dtype="complex64", nthreads=THREADS)
    plan.setpts(*[np.ascontiguousarray(row) for row in traj.numpy()])
    scale = 1.0 / math.sqrt(math.prod(SHAPE))
    coils_np = coils[0].numpy()
    data_np = data[0].numpy()
    weights_np = weights.numpy()

    def raw_forward() -> np.ndarray:
        return plan.execute(coils_np) * scale

    def raw_adjoint() -> np.ndarray:
        return plan.execute_adjoint(data_np) * scale

    def raw_both() -> np.ndarray:
        return plan.execute_adjoint(plan.execute(coils_np) * (scale * weights_np)) * scale

    tkb = ops["torchkbnufft"]
    fin = ops["finufft"]
    fns = {
        ("torchkbnufft (NufftOp)", "forward"): lambda: tkb.forward_coils(coils),
        ("torchkbnufft (NufftOp)", "adjoint"): lambda: tkb.adjoint_coils(data),
        ("torchkbnufft (NufftOp)", "fwd+adj"): lambda: tkb.adjoint_coils(tkb.forward_coils(coils) * weights),
        ("finufft (NufftOp)", "forward"): lambda: fin.forward_coils(coils),
        ("finufft (raw Plan)", "forward"): raw_forward,
        ("finufft (NufftOp)", "adjoint"): lambda: fin.adjoint_coils(data),
        ("finufft (raw Plan)", "adjoint"): raw_adjoint,
        ("finufft (NufftOp)", "fwd+adj"): lambda: fin.adjoint_coils(fin.forward_coils(coils) * weights),
        ("finufft (raw Plan)", "fwd+adj"): raw_both,
        ("toeplitz", "normal"): lambda: toeplitz_apply(coils, kernel),
        ("toeplitz unchunked", "normal"): lambda: toeplitz_apply(coils, kernel, chunk_elements=1 << 40),
    }
    rows: dict[str, dict[str, float]] = {}
    for (path, column), seconds in interleaved_medians(fns, 9).items():
        rows.setdefault(path, {})[column] = seconds
    toeplitz_s = rows.pop("toeplitz")["normal"]
    unchunked_s = rows.pop("toeplitz unchunked")["normal"]

    print(f"NUFFT {SHAPE[0]}x{SHAPE[1]}, {N_COILS} coils, radial 100x640 (K={traj.shape[1]}), "
          f"{THREADS} threads, complex64, eps={EPS}")
    print(f"preparation: Pipe-Menon density {density_s * 1e3:.0f} ms, "
          f"Toeplitz kernel {kernel_s * 1e3:.0f} ms")
    print(f"{'path':<24}{'forward ms':>12}{'adjoint ms':>12}{'fwd+adj ms':>12}")
    for name, row in rows.items():
        cells = "".join(f"{row[column] * 1e3:>12.1f}" for column in ("forward", "adjoint", "fwd+adj"))
        print(f"{name:<24}{cells}")
    print(f"{'Toeplitz normal (FFT)':<24}{'':>12}{'':>12}{toeplitz_s * 1e3:>12.1f}")
    print(f"{'  all coils in one call':<24}{'':>12}{'':>12}{unchunked_s * 1e3:>12.1f}")
    tkb = rows["torchkbnufft (NufftOp)"]["fwd+adj"]
    ours = rows["finufft (NufftOp)"]["fwd+adj"]
    raw = rows["finufft (raw Plan)"]["fwd+adj"]
    print(f"Toeplitz / fwd+adj: torchkbnufft {toeplitz_s / tkb:.3f}, finufft {toeplitz_s / ours:.3f}")
    print(f"toeplitz_speedup={tkb / toeplitz_s:.2f} finufft_overhead={ours / raw:.2f}")


if __name__ == "__main__":
    main()
