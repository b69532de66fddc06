"""`mrdserve recon`: reconstruct a whole file offline and write one image file per slice.

Until the artifact registry lands (issue 5) every slice goes through the classical baseline of its task;
the output names say which method made them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py

from models.data.baseline import classical_reconstruction
from models.data.fastmri import read_fastmri
from models.data.ismrmrd_io import read_ismrmrd
from models.data.sample import KSpaceSample
from service.outputs.png import write_png

FORMATS = ("png", "dicom", "nifti", "ismrmrd")
AVAILABLE_FORMATS = ("png",)


def add_recon_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="ISMRMRD HDF5 file (or a fastMRI HDF5 file)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    parser.add_argument("--format", choices=FORMATS, default="png", help="output format (default: png)")
    parser.add_argument("--artifact", default=None,
                        help="artifact name (learned models arrive with the registry; classical until then)")
    parser.add_argument("--method", choices=("auto", "rss", "adjoint", "cg-sense"), default="auto",
                        help="classical method (default: auto picks per task)")
    parser.add_argument("--trajectory-units", choices=("radians", "cycles", "fov"), default=None,
                        help="override the trajectory units read from the file (non-Cartesian data)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0 ...)")


def read_samples(path: Path, trajectory_units: str | None = None) -> list[KSpaceSample]:
    """Read every sample of an ISMRMRD file, or of a fastMRI file (recognised by its `kspace` dataset)."""
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            is_fastmri = "kspace" in f
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file ({exc})") from exc
    if is_fastmri:
        return read_fastmri(path)[0]
    return read_ismrmrd(path, trajectory_units=trajectory_units)[1]


def output_name(sample: KSpaceSample, method: str) -> str:
    i = sample.index
    return f"slice{i.slice:03d}_contrast{i.contrast:02d}_rep{i.repetition:02d}_set{i.set:02d}_{method}"


def run_recon(args: argparse.Namespace) -> int:
    if args.format not in AVAILABLE_FORMATS:
        print(f"mrdserve recon: --format {args.format} is not yet available (arrives with the runtime, issue 5); "
              f"use one of {', '.join(AVAILABLE_FORMATS)}", file=sys.stderr)
        return 2
    if args.artifact is not None:
        print("mrdserve recon: --artifact is not yet available (arrives with the registry, issue 5)",
              file=sys.stderr)
        return 2
    try:
        samples = read_samples(args.input, args.trajectory_units)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mrdserve recon: {exc}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        result = classical_reconstruction(sample, method=args.method, device=args.device)
        image = result.image.cpu().numpy()
        if image.ndim == 3:  # 3D volume: one PNG per partition
            for z, plane in enumerate(image):
                write_png(plane, args.output / f"{output_name(sample, result.method)}_z{z:03d}.png")
        else:
            write_png(image, args.output / f"{output_name(sample, result.method)}.png")
    print(f"reconstructed {len(samples)} image(s) from {args.input.name} into {args.output}")
    return 0
