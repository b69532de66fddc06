"""The seed thesis's benchmark of unrolled networks on the bundled config, as ``mrdserve benchmark`` runs it.

Zero-filled, U-Net, KIKI-net, Cascade-net, PD-net and XPDNet trained under one protocol (Adam 1e-3, gradient
clipping 1, L1 loss, the same synthetic data, data order and step budget), then scored on held-out slices (PSNR /
SSIM mean and std), with their parameter counts and inference time per slice measured side by side (median of
interleaved repeats). KIKI-net is trained block by block as the thesis did (the trainer's ``loop.stagewise``).
Config: ``models/training/configs/benchmarks/unrolled.yaml`` (CPU scale: 64x64, 4 coils, R=4, 3000 steps per
network, about 21 minutes on 2 idle cores; ``--steps 1000`` for a shorter run; on cores shared with other jobs set
``OMP_NUM_THREADS=1``: two threads there made the U-Net's steps 25x slower, and 500 steps took 16 minutes).
Writes ``table.md``, ``figure.png`` and ``results.json`` to ``bench/out/unrolled``.

Run: ``.venv/bin/python bench/unrolled.py [--steps N] [-o OUT] [--data DIR]``. Last line: ``best=<name>
pdnet_db=<x> xpdnet_db=<x> cascade_db=<x> kiki_db=<x> unet_db=<x> zf_db=<x>`` (mean held-out PSNR in dB).
"""

from __future__ import annotations

import argparse
import sys

from mrdserve.models.training.benchmark import BUNDLED_CONFIG
from mrdserve.models.training.cli import run_benchmark


def main(argv: list[str] | None = None) -> int:
    """Run the bundled benchmark config with the command line's overrides."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", metavar="OUT", help="output folder (default: bench/out/unrolled)")
    parser.add_argument("--steps", type=int, metavar="N", help="step budget of every network (default: the config's)")
    parser.add_argument("--data", metavar="DIR", help="fastMRI or ISMRMRD files instead of the synthetic data")
    parser.add_argument("--config", default=str(BUNDLED_CONFIG), help="benchmark config (default: the bundled one)")
    return run_benchmark(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
