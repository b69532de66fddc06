"""SHINE against implicit differentiation and JFB for the DEQ: backward time, gradient quality, PSNR at equal time.

One DEQ (same kwargs and initial weights, Broyden forward solve for every mode so that only the backward differs) on
the trainer's synthetic Cartesian multicoil data (``build_run``: SyntheticDataset, the (seed, step) data order, the
L1 loss, clipping at 1, ``evaluate``; Adam at ``--lr``), trained for the same wall-clock budget in each of
``--train-modes``: "exact" (implicit differentiation, the reference), "jfb", "shine" (the thesis's: Broyden with an
OPA update every forward iteration, its inverse estimate reused in the backward) and "shine-refine" (the same, the
exact backward started from SHINE's direction) by default; "shine-plain" (Broyden's estimate without OPA) is
measured for its gradient only unless asked for. Per trained mode: median forward and backward time per step, steps
done, validation PSNR (the eval/export form) at the end. Gradient quality, every mode: the cosine of its gradient
with the exact one (forward and backward solved to 1e-6 / 1e-7) on the same ``--cos-batches`` training batches, at
the initial weights and at the weights exact training ended with. The table is printed and written with the settings
to ``bench/out/shine/results.json``. Last line: ``shine_backward_speedup=<exact / shine backward time>
shine_grad_cos=<mean> jfb_grad_cos=<mean>`` then the refine and plain (no OPA) cosines and each mode's PSNR.

Default run (64x64, 8 coils, batch 2, 150 s per trained mode) takes about 12 minutes on 2 CPU cores;
``--quick`` (32x32, 4 coils, 15 s per mode) about 2 minutes. Wall-clock budgets are sensitive to other load on
the machine; torch runs on ``--threads 1`` by default, as more threads contending with other work on a shared
2-core machine made the same steps up to 30x slower and erratic.
Run: ``.venv/bin/python bench/shine.py [--quick] [--budget 150] [--matrix 64] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mrdserve.models.nets.registry import build_network
from mrdserve.models.training.config import config_from_dict
from mrdserve.models.training.evaluate import evaluate
from mrdserve.models.training.loop import build_run, step_loader, training_loss

MODES = {"exact": {"backprop": "exact"}, "jfb": {"backprop": "jfb"}, "shine": {"backprop": "shine", "opa_every": 1},
         "shine-refine": {"backprop": "shine-refine", "opa_every": 1}, "shine-plain": {"backprop": "shine"}}
REFERENCE = {"backprop": "exact", "tolerance": 1e-6, "max_iterations": 200, "backward_tolerance": 1e-7,
             "backward_max_iterations": 300}
OUT = Path(__file__).resolve().parent / "out" / "shine"


def _config(args: argparse.Namespace, output_dir: str) -> Any:
    deq = {"n_filters": args.filters, "n_layers": 4, "max_iterations": 30, "tolerance": args.tolerance,
           "export_iterations": 30, "solver": "broyden"}
    return config_from_dict({
        "name": "bench-shine", "task": "cartesian2d-multicoil", "seed": 0,
        "network": {"name": "deq", "kwargs": deq},
        "data": {"train_size": args.train_size, "val_size": args.val_size,
                 "generator": {"matrix": args.matrix, "coils": args.coils}},
        "optim": {"name": "adam", "lr": args.lr, "grad_clip": 1.0}, "loss": "l1",
        "loop": {"steps": 10**6, "batch_size": args.batch, "val_every": 0, "val_examples": args.val_size,
                 "log_every": 10**6, "checkpoint_every": 10**6, "device": args.device, "deterministic": False},
        "output_dir": output_dir,
    })


def _model(run: Any, state: dict, **overrides: Any) -> torch.nn.Module:
    model = build_network("deq", **(run.config.network.kwargs | overrides)).to(run.device)
    model.load_state_dict(state)
    return model.train()


def _forward_backward(model: torch.nn.Module, run: Any, batch: Any) -> tuple[float, float, float]:
    """Loss, forward seconds and backward seconds of one step (OPA's outer loss set when the model uses it)."""
    sync = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)
    if model.opa_every:
        model.outer_loss = lambda output: training_loss(run.loss_fn, batch, output)
    start = time.perf_counter()
    loss = training_loss(run.loss_fn, batch, model(**batch.inputs))
    sync()
    middle = time.perf_counter()
    loss.backward()
    sync()
    return loss.item(), middle - start, time.perf_counter() - middle


def _gradient(model: torch.nn.Module, run: Any, batch: Any) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    _forward_backward(model, run, batch)
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def gradient_cosines(run: Any, state: dict, batches: list[Any]) -> dict[str, list[float]]:
    """Per mode, the cosine of its gradient with the tightly solved exact one on each batch."""
    cosines: dict[str, list[float]] = {mode: [] for mode in MODES}
    for batch in batches:
        reference = _gradient(_model(run, state, **REFERENCE), run, batch)
        for mode, kwargs in MODES.items():
            gradient = _gradient(_model(run, state, **kwargs), run, batch)
            cosines[mode].append(float(torch.nn.functional.cosine_similarity(gradient, reference, dim=0)))
    return cosines


def train_for(run: Any, state: dict, mode: str, budget_s: float, baseline_cache: dict) -> tuple[dict, dict]:
    """Train ``mode`` from ``state`` for ``budget_s`` seconds on the run's data order; its figures and weights."""
    model = _model(run, state, **MODES[mode])
    optimiser = torch.optim.Adam(model.parameters(), lr=run.config.optim.lr)
    loader = step_loader(run.config, run.loader.dataset, run.dist, run.device, 0)
    forward, backward, losses, backward_iterations = [], [], [], []
    started = time.perf_counter()
    for batch in loader:
        batch = batch.to(run.device)
        optimiser.zero_grad(set_to_none=True)
        loss, forward_s, backward_s = _forward_backward(model, run, batch)
        torch.nn.utils.clip_grad_norm_(model.parameters(), run.config.optim.grad_clip)
        optimiser.step()
        forward.append(forward_s)
        backward.append(backward_s)
        losses.append(loss)
        backward_iterations.append(model.last_stats.get("backward_iterations", 0))
        if time.perf_counter() - started >= budget_s:
            break
    metrics = evaluate(model, run.val_set, run.val_indices, run.device, baseline_cache).metrics
    figures = {"steps": len(losses), "forward_s": statistics.median(forward), "backward_s": statistics.median(backward),
               "backward_iterations": statistics.mean(backward_iterations), "final_loss": statistics.mean(losses[-5:]),
               "val_psnr": metrics["model"]["psnr"], "val_ssim": metrics["model"]["ssim"],
               "zero_filled_psnr": metrics["baselines"].get("zero-filled", {}).get("psnr"),
               "forward_iterations": model.last_stats.get("forward_iterations")}
    return figures, {k: v.detach().clone() for k, v in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32x32, 4 coils, 15 s per mode, 2 cosine batches")
    parser.add_argument("--budget", type=float, default=None, help="training seconds per mode (default 150)")
    parser.add_argument("--matrix", type=int, default=None)
    parser.add_argument("--coils", type=int, default=None)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="forward relative-residual tolerance")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--train-size", type=int, default=32)
    parser.add_argument("--val-size", type=int, default=4)
    parser.add_argument("--cos-batches", type=int, default=None, help="batches for the gradient cosines (4)")
    parser.add_argument("--train-modes", default="exact,jfb,shine,shine-refine",
                        help=f"modes to train (comma-separated, of {','.join(MODES)}; gradient cosines: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared machine, more threads slowed steps up to 30x)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quick = {"budget": 15.0, "matrix": 32, "coils": 4, "cos_batches": 2}
    default = {"budget": 150.0, "matrix": 64, "coils": 8, "cos_batches": 4}
    train_modes = [mode for mode in args.train_modes.split(",") if mode]
    unknown = sorted(set(train_modes) - set(MODES))
    if unknown or "exact" not in train_modes:
        parser.error(f"--train-modes: {', '.join(unknown) or 'exact is missing'}; known: {', '.join(MODES)}")
    for key, value in (quick if args.quick else default).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        run = build_run(_config(args, scratch), resume=False)
        if run.writer is not None:
            run.writer.close()
        for index in range(len(run.loader.dataset)):  # prepare (and cache) every example before any timing
            run.loader.dataset[index]
        initial = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        loader = step_loader(run.config, run.loader.dataset, run.dist, run.device, 0)
        batches = [b.to(run.device) for b, _ in zip(loader, range(args.cos_batches), strict=False)]
        cache: dict = {}
        results, trained = {}, {}
        for mode in train_modes:
            results[mode], trained[mode] = train_for(run, initial, mode, args.budget, cache)
            print(f"{mode}: {results[mode]}", flush=True)
        cos_initial = gradient_cosines(run, initial, batches)
        cos_trained = gradient_cosines(run, trained["exact"], batches)
    report(args, results, cos_initial, cos_trained)


def report(args: argparse.Namespace, results: dict[str, dict], cos_initial: dict, cos_trained: dict) -> None:
    """Table, targets, JSON and the headline line (modes not trained have cosines only)."""
    exact = results["exact"]
    rows = {mode: dict(results.get(mode, {})) for mode in MODES}
    for mode, figures in rows.items():
        figures["cos_initial"] = statistics.mean(cos_initial[mode])
        figures["cos_trained"] = statistics.mean(cos_trained[mode])
        figures["grad_cos"] = statistics.mean(cos_initial[mode] + cos_trained[mode])
        if mode in results:
            figures["backward_speedup"] = exact["backward_s"] / figures["backward_s"]
            figures["psnr_vs_exact"] = figures["val_psnr"] - exact["val_psnr"]
    print(f"DEQ {args.filters} filters, {args.matrix}x{args.matrix}, {args.coils} coils, batch {args.batch}, Adam "
          f"{args.lr:g}, {args.budget:.0f} s of training per mode, forward tolerance {args.tolerance:g} (Broyden), "
          f"{args.threads} thread(s); times: medians per step; cosines: means over {args.cos_batches} batches; "
          f"zero-filled PSNR {exact['zero_filled_psnr']:.2f} dB")
    print(f"{'mode':<13}{'steps':>6}{'fwd (s)':>9}{'bwd (s)':>9}{'bwd x':>7}{'bwd it':>7}{'cos init':>9}"
          f"{'cos trn':>9}{'PSNR':>8}{'dPSNR':>7}")
    for mode, r in rows.items():
        trained = (f"{r['steps']:>6}{r['forward_s']:>9.3f}{r['backward_s']:>9.3f}{r['backward_speedup']:>7.1f}"
                   f"{r['backward_iterations']:>7.1f}") if "steps" in r else f"{'(cosines only)':>38}"
        tail = f"{r['val_psnr']:>8.2f}{r['psnr_vs_exact']:>+7.2f}" if "steps" in r else ""
        print(f"{mode:<13}{trained}{r['cos_initial']:>9.4f}{r['cos_trained']:>9.4f}{tail}")
    nan = float("nan")
    shine = rows["shine"]
    targets = {"shine_backward_3x": shine.get("backward_speedup", nan) >= 3,
               "shine_cos_above_jfb": shine["grad_cos"] > rows["jfb"]["grad_cos"],
               "shine_psnr_within_0.3dB": abs(shine.get("psnr_vs_exact", nan)) <= 0.3}
    print("targets: " + ", ".join(f"{name} {'met' if met else 'NOT met'}" for name, met in targets.items()))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps({"settings": vars(args), "results": rows, "targets": targets,
                                                  "cos_initial": cos_initial, "cos_trained": cos_trained}, indent=2))
    keys = [("shine_backward_speedup", shine.get("backward_speedup", nan)), ("shine_grad_cos", shine["grad_cos"]),
            ("jfb_grad_cos", rows["jfb"]["grad_cos"]), ("refine_grad_cos", rows["shine-refine"]["grad_cos"]),
            ("plain_grad_cos", rows["shine-plain"]["grad_cos"])]
    keys += [(f"{mode.replace('shine-', '')}_psnr", rows[mode].get("val_psnr", nan)) for mode in MODES]
    print(" ".join(f"{key}={value:.4f}" if "cos" in key else f"{key}={value:.2f}" for key, value in keys))


if __name__ == "__main__":
    main()
