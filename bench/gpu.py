"""The GPU check: the CUDA runner and NUFFT paths, device-resident batching and per-slice latency at clinical size.

Run by ``bench/gpu.sh`` on a machine with a GPU (the ``device`` tool, when a session is lent one); ``--device cpu
--quick`` runs the same code at a small size anywhere (a smoke test of this script, not a measurement).

1. NUFFT forward + adjoint of a fully sampled 16-coil 320x320 radial acquisition with each backend
   that runs on the device (torchkbnufft everywhere; cufinufft on CUDA when installed).
2. Each bundled artifact with each runner (TorchScript; ONNX Runtime with its CUDA provider when installed):
   inference per batch of 1, 4 and 16 prepared slices already on the device, as slices per second.
3. Per-slice latency at 320x320, 16 coils, R=4 (XPDNet: Cartesian; NC-PDNet: radial): preparation (CPU, caches
   warm) + inference (device), p50 over repeated slices. The thesis reports 661 ms per multicoil NC-PDNet slice.

Figures go to ``OUT/gpu.json`` and the table to stdout. Last line: ``key=value`` pairs.

    python bench/gpu.py --out bench/out/gpu [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.simulate import simulate_cartesian, simulate_noncartesian
from mrdserve.models.physics.nufft import nufft_adjoint, nufft_forward
from mrdserve.models.physics.nufft_backends import cufinufft_available
from mrdserve.service.artifacts import load_artifacts
from mrdserve.service.engine.pipeline import Pipeline
from mrdserve.service.metrics import ServiceMetrics
from mrdserve.service.runners import to_device


def timed(run: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    """Seconds per call after one warm-up call, synchronising the device around each."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def nufft_rows(device: torch.device, matrix: int, coils: int, repeats: int) -> dict[str, float]:
    sim = simulate_noncartesian("radial", (matrix, matrix), n_coils=coils, acceleration=1.0, noise_level=0.0,
                                with_noise_scan=False, seed=1)
    trajectory = sim.trajectory.to(device, torch.float32)
    data = sim.kspace.to(device)
    figures = {}
    backends = ["torchkbnufft"] + (["cufinufft"] if device.type == "cuda" and cufinufft_available() else [])
    if device.type == "cpu":
        backends.append("finufft")
    for backend in backends:
        def run(backend: str = backend) -> None:
            images = nufft_adjoint(data, trajectory, (matrix, matrix), backend=backend)
            nufft_forward(images, trajectory, backend=backend)

        figures[f"nufft_{backend}_ms"] = 1000 * statistics.median(timed(run, device, repeats))
        print(f"NUFFT adjoint + forward, {coils} coils, {matrix}^2, {tuple(data.shape[-1:])} samples, {backend}: "
              f"{figures[f'nufft_{backend}_ms']:.1f} ms")
    if device.type == "cuda" and "cufinufft" not in backends:
        print("cufinufft: not installed on this machine (row skipped)")
    return figures


def sample_for(task: str, matrix: int, coils: int) -> KSpaceSample:
    if task.startswith("cartesian"):
        sim = simulate_cartesian(matrix, n_coils=coils, acceleration=4.0, noise_level=0.01,
                                 readout_oversampling=1, with_noise_scan=False, seed=2)
        assert sim.mask is not None and sim.acs is not None
        return KSpaceSample(kspace=sim.kspace[0], matrix=sim.matrix, recon_matrix=sim.matrix,
                            mask=sim.mask[:, None], acs_mask=sim.acs[:, None], acceleration=(4,))
    sim = simulate_noncartesian("radial", (matrix, matrix), n_coils=coils, acceleration=4.0, noise_level=0.01,
                                with_noise_scan=False, seed=2)
    assert sim.trajectory is not None
    return KSpaceSample(kspace=sim.kspace[0], matrix=sim.matrix, recon_matrix=sim.matrix, trajectory_type="radial",
                        trajectory=sim.trajectory.to(torch.float32), acceleration=(4,))


def runner_kinds(device: torch.device) -> list[str]:
    kinds = ["torchscript"]
    try:
        import onnxruntime

        if device.type == "cpu" or "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            kinds.append("onnx")
        else:
            print("ONNX Runtime has no CUDA provider here (onnxruntime-gpu not installed): ONNX rows skipped")
    except ImportError:
        print("onnxruntime is not installed: ONNX rows skipped")
    return kinds


def artifact_rows(device: torch.device, matrix: int, coils: int, batches: list[int],
                  repeats: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    artifacts = [a for a in load_artifacts() if a.manifest.task != "noncartesian3d"]
    for kind in runner_kinds(device):
        pipeline = Pipeline(artifacts, kind, device, ServiceMetrics())
        for artifact in artifacts:
            trajectory = artifact.manifest.constraints.trajectory[0]
            if trajectory == "spiral":
                continue  # the radial row stands for NC-PDNet
            sample = sample_for(artifact.manifest.task, matrix, coils)
            preparation = timed(lambda p=pipeline, s=sample, a=artifact: p.prepare(a, s), torch.device("cpu"), repeats)
            prepared = pipeline.prepare(artifact, sample)
            runner = pipeline.runner(artifact)
            for batch in batches:
                inputs = to_device({name: tensor.repeat(batch, *([1] * (tensor.dim() - 1)))
                                    for name, tensor in prepared.inputs.items()}, device)
                seconds = statistics.median(timed(lambda r=runner, i=inputs: r.run(i), device, repeats))
                figures[f"{artifact.name}_{kind}_batch{batch}_slices_per_s"] = batch / seconds
                if batch == 1:
                    figures[f"{artifact.name}_{kind}_slice_ms"] = 1000 * (seconds + statistics.median(preparation))
                    figures[f"{artifact.name}_{kind}_inference_ms"] = 1000 * seconds
                print(f"{artifact.name:<22} {kind:<12} batch {batch:>2}: {1000 * seconds:8.1f} ms inference, "
                      f"{batch / seconds:7.1f} slices/s; preparation {1000 * statistics.median(preparation):.1f} ms")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/gpu"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of this script")
    args = parser.parse_args()
    device = torch.device(args.device)
    matrix, coils, batches, repeats = (96, 4, [1, 4], 2) if args.quick else (320, 16, [1, 4, 16], 10)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, {matrix}x{matrix}, {coils} coils, R=4")
    figures = {**nufft_rows(device, matrix, coils, repeats), **artifact_rows(device, matrix, coils, batches, repeats)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps({"device": name, "matrix": matrix, "coils": coils,
                                                   "figures": figures}, indent=2))
    print(" ".join(f"{key}={value:.2f}" for key, value in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
