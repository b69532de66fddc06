"""``mrdserve train``, ``evaluate`` and ``benchmark``: argument builders and handlers (dispatched by service/cli.py).

Config and data errors print one message naming the problem and return 2; training success returns 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import h5py
import torch


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mrdserve train``."""
    parser.add_argument("config", metavar="CONFIG", help="YAML training config (see models/training/configs)")
    parser.add_argument("--resume", dest="resume", action="store_true", default=True,
                        help="continue from OUTPUT_DIR/latest.pt when it exists (default)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start from scratch even if OUTPUT_DIR holds checkpoints")
    parser.add_argument("--output-dir", help="override the config's output_dir")
    parser.add_argument("--steps", type=int, help="override loop.steps")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override loop.device")
    return parser


def run_train(args: argparse.Namespace) -> int:
    """Load the config, apply overrides, train; print where the last checkpoint is and its metrics."""
    from mrdserve.models.training.config import load_config, validate
    from mrdserve.models.training.loop import train

    try:
        config = load_config(args.config)
        loop_changes = {key: value for key, value in (("steps", args.steps), ("device", args.device))
                        if value is not None}
        config = dataclasses.replace(config, loop=dataclasses.replace(config.loop, **loop_changes))
        if args.output_dir:
            config = dataclasses.replace(config, output_dir=args.output_dir)
        validate(config)
        result = train(config, resume=args.resume)
    except ValueError as exc:
        print(f"mrdserve train: {exc}", file=sys.stderr)
        return 2
    print(f"step {result.step}: checkpoint {result.checkpoint}")
    if result.metrics.get("model"):
        from mrdserve.models.training.evaluate import format_table, metrics_table

        print(format_table(metrics_table(result.metrics)))
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mrdserve evaluate``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file (or a run directory)")
    parser.add_argument("data_dir", metavar="DATA_DIR",
                        help="directory of ISMRMRD files with ground truth (mrdserve simulate) or fastMRI files")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for metrics.csv and figures")
    parser.add_argument("--max-examples", type=int, default=50, help="evaluate at most this many slices")
    parser.add_argument("--figures", type=int, default=3, help="PNG figures of this many slices")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    return parser


def _data_kind(directory: Path) -> str:
    """"fastmri" when the first HDF5 file has a root ``kspace`` dataset, else "ismrmrd"."""
    files = sorted(p for p in directory.glob("*.h5")) + sorted(directory.glob("*.hdf5"))
    if not files:
        raise ValueError(f"DATA_DIR {str(directory)!r} holds no .h5 files")
    with h5py.File(files[0], "r") as handle:
        return "fastmri" if "kspace" in handle else "ismrmrd"


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint's eager network and the classical baselines; print the table, write CSV + PNGs."""
    from mrdserve.models.nets.registry import build_network
    from mrdserve.models.training.checkpoint import load_checkpoint
    from mrdserve.models.training.datasets import FastMRIDataset, IsmrmrdDataset
    from mrdserve.models.training.evaluate import evaluate, format_table, metrics_table, write_csv, write_figures
    from mrdserve.models.training.loop import _mask_func, resolve_device

    try:
        device = resolve_device(args.device)
        checkpoint = load_checkpoint(args.checkpoint, map_location=device)
        directory = Path(args.data_dir)
        if not directory.is_dir():
            raise ValueError(f"DATA_DIR {str(directory)!r} is not a directory")
        preparation = checkpoint["preparation"]
        generator = checkpoint["config"]["data"].get("generator", {})
        if _data_kind(directory) == "fastmri":
            dataset = FastMRIDataset(directory, _mask_func(generator), preparation["name"], preparation["params"])
        else:
            mask = _mask_func(generator) if checkpoint["config"]["data"]["kind"] != "synthetic" and generator else None
            dataset = IsmrmrdDataset(directory, mask, preparation["name"], preparation["params"])
        model = build_network(checkpoint["network"]["name"], **checkpoint["network"]["kwargs"]).to(device)
        model.load_state_dict(checkpoint["model_state"])
        indices = list(range(min(len(dataset), args.max_examples)))
        with torch.no_grad():
            evaluation = evaluate(model, dataset, indices, device, keep_images=args.figures > 0)
    except ValueError as exc:
        print(f"mrdserve evaluate: {exc}", file=sys.stderr)
        return 2
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    print(format_table(metrics_table(evaluation.metrics)))
    csv_path = write_csv(evaluation.metrics, output / "metrics.csv")
    figures = write_figures(evaluation.images, output / "figures", max_slices=args.figures)
    print(f"wrote {csv_path} and {len(figures)} figure(s) in {output / 'figures'}")
    return 0


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mrdserve benchmark``."""
    parser.add_argument("config", metavar="CONFIG",
                        help="YAML benchmark config (models/training/configs/benchmarks/unrolled.yaml)")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="folder for table.md, figure.png and results.json (default: the config's output_dir)")
    parser.add_argument("--steps", type=int, metavar="N", help="override the step budget of every network")
    parser.add_argument("--data", metavar="DIR",
                        help="fastMRI or ISMRMRD files instead of the synthetic data (kind detected; held out: the "
                             "config's data.val_path, else the last data.val_fraction of the files)")
    return parser


def run_benchmark(args: argparse.Namespace) -> int:
    """Train and score every method of the config under its one protocol; print the table, then the headline
    figures as the last line; write the table, figure and JSON to OUT."""
    from mrdserve.models.training import benchmark

    try:
        config = benchmark.load_benchmark_config(args.config)
        kind = None
        if args.data is not None:
            directory = Path(args.data)
            if not directory.is_dir():
                raise ValueError(f"--data {str(directory)!r} is not a directory")
            kind = _data_kind(directory)
        config = benchmark.with_overrides(config, steps=args.steps, data_path=args.data, data_kind=kind,
                                          output_dir=args.output)
        result = benchmark.run_benchmark(config)
    except ValueError as exc:
        print(f"mrdserve benchmark: {exc}", file=sys.stderr)
        return 2
    written = benchmark.write_outputs(result, config.output_dir)
    print(benchmark.markdown_table(result))
    print(f"wrote {', '.join(str(path) for path in written.values())}")
    print(benchmark.headline(result))
    return 0
