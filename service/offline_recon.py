"""`mrdserve recon`: reconstruct a whole file offline and write the images as PNG, DICOM, NIfTI or ISMRMRD.

Each slice goes to the artifact whose manifest fits it (or the one named with ``--artifact``); when none fits,
the classical baseline of its task reconstructs it, and the output (PNG names, DICOM/ISMRMRD image comments)
says which method made each image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import h5py

from mrdserve.models.data.baseline import METHODS
from mrdserve.models.data.fastmri import read_fastmri
from mrdserve.models.data.input_errors import InputError
from mrdserve.models.data.ismrmrd_inspect import HDF5_ERRORS, unreadable
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.admission import check_samples
from mrdserve.service.bounded_read import read_bounded
from mrdserve.service.config import ServiceConfig, budget_from_env
from mrdserve.service.engine.batcher import ReconstructionError
from mrdserve.service.engine.choice import Choice
from mrdserve.service.engine.engine import Engine
from mrdserve.service.outputs.formats import FORMAT_NAMES, write_outputs
from mrdserve.service.runners import RUNNER_KINDS


def add_recon_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="ISMRMRD HDF5 file (or a fastMRI HDF5 file)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    parser.add_argument("--format", choices=FORMAT_NAMES, default="png", help="output format (default: png)")
    parser.add_argument("--artifact", default=None,
                        help="artifact name (or name-version) to use, or 'classical'; default: the first "
                             "artifact whose constraints fit each slice, else the classical baseline")
    parser.add_argument("--artifacts", action="append", type=Path, default=None, metavar="DIR",
                        help="artifact directory to search (repeatable; default: the bundled artifacts)")
    parser.add_argument("--runner", choices=RUNNER_KINDS, default="auto",
                        help="how to run artifacts (default: auto = TorchScript, the faster one on CPU)")
    parser.add_argument("--method", choices=METHODS, default="auto",
                        help="classical method wherever the classical path is used (artifact 'classical', or no "
                             "artifact validated for the data); auto: l1-wavelet for accelerated 2D data, coil "
                             "combination when fully sampled (default)")
    parser.add_argument("--trajectory-units", choices=("radians", "cycles", "fov"), default=None,
                        help="override the trajectory units read from the file (non-Cartesian data)")
    parser.add_argument("--device", default="cpu", help="torch device: auto, cpu, cuda, cuda:0 ...")
    parser.add_argument("--uncertainty", type=int, default=0, metavar="N",
                        help="draw N posterior samples per slice with the score prior and write their mean and "
                             "per-pixel standard deviation as two more series (slow: minutes per slice on a CPU; "
                             "default 0: none)")
    parser.add_argument("--uncertainty-budget-s", type=float, default=None, metavar="S",
                        help="posterior sampling time per slice (default 120 s)")


def read_input(path: Path, trajectory_units: str | None = None) -> tuple[Any, list[KSpaceSample]]:
    """The ISMRMRD header (a fastMRI file's embedded one, or None) and every sample of an input file."""
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    if not h5py.is_hdf5(path):
        raise InputError(f"{path.name} is not HDF5; give an ISMRMRD (or fastMRI) HDF5 file", "not_hdf5")
    try:
        with h5py.File(path, "r") as f:
            is_fastmri = "kspace" in f
    except HDF5_ERRORS as exc:
        raise unreadable(exc) from None
    if is_fastmri:
        volume = read_fastmri(path)
        check_samples(volume.samples)
        return volume.header, volume.samples
    return read_bounded(path, "dataset", budget_from_env(), trajectory_units)


def offline_engine(artifacts: list[Path] | None = None, runner: str = "auto", device: str = "cpu",
                   uncertainty_budget_s: float | None = None) -> Engine:
    """An engine for reconstructions without a server: artifacts verified, each runner loaded when a sample first
    needs it, no warm-up; ``reconstruct_sync`` is then the same pipeline the service runs."""
    given = {"artifacts": artifacts or None, "runner": runner, "device": device, "warmup": False,
             "uncertainty_budget_s": uncertainty_budget_s}
    config = ServiceConfig(**{key: value for key, value in given.items() if value is not None})
    return Engine(config, preload=False)


def run_recon(args: argparse.Namespace) -> int:
    try:
        header, samples = read_input(args.input, args.trajectory_units)
        choice = Choice.of(args.artifact, args.method)
        engine = offline_engine(args.artifacts, args.runner, args.device, args.uncertainty_budget_s)
        n_samples = engine.check_uncertainty(args.uncertainty, "--uncertainty", samples)
        args.output.mkdir(parents=True, exist_ok=True)
        results = []
        for sample in samples:
            results.extend(engine.reconstruct_sync([sample], choice))
            engine.add_uncertainty_sync(results[-1:], n_samples)
            last = results[-1]
            maps = (f"; uncertainty maps: {last.derived[0].note}" if last.derived
                    else f"; WARNING: {last.posterior_error}" if last.posterior_error else "")
            print(f"slice {sample.index.slice}: {last.method or last.label}{maps}")
        written = write_outputs(results, header, args.format, args.output)
    except (ValueError, FileNotFoundError, ReconstructionError) as exc:
        print(f"mrdserve recon: {exc}", file=sys.stderr)
        return 2
    print(f"reconstructed {len(samples)} image(s) from {args.input.name} into {args.output} "
          f"({len(written)} {args.format} file(s))")
    return 0
