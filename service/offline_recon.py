"""`mrdserve recon`: reconstruct a whole file offline and write one image file per slice.

Each slice goes to the artifact whose manifest fits it (or the one named with ``--artifact``); when none fits,
the classical baseline of its task reconstructs it, and the output name says which method made each image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import torch

from models.data.baseline import classical_reconstruction
from models.data.fastmri import read_fastmri
from models.data.ismrmrd_io import read_ismrmrd
from models.data.prepare import collate, output_to_image, prepare_sample
from models.data.sample import KSpaceSample
from service.artifacts import Artifact, choose, load_artifacts
from service.outputs.png import write_png
from service.runners import RUNNER_KINDS, Runner, load_runner, resolve_device

FORMATS = ("png", "dicom", "nifti", "ismrmrd")
AVAILABLE_FORMATS = ("png",)
CLASSICAL = "classical"


def add_recon_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="ISMRMRD HDF5 file (or a fastMRI HDF5 file)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    parser.add_argument("--format", choices=FORMATS, default="png", help="output format (default: png)")
    parser.add_argument("--artifact", default=None,
                        help="artifact name (or name-version) to use, or 'classical'; default: the first "
                             "artifact whose constraints fit each slice, else the classical baseline")
    parser.add_argument("--artifacts", action="append", type=Path, default=None, metavar="DIR",
                        help="artifact directory to search (repeatable; default: the bundled artifacts)")
    parser.add_argument("--runner", choices=RUNNER_KINDS, default="auto",
                        help="how to run artifacts (default: auto = TorchScript, the faster one on CPU)")
    parser.add_argument("--method", choices=("auto", "rss", "adjoint", "cg-sense"), default="auto",
                        help="classical method when the classical baseline is used (default: auto per task)")
    parser.add_argument("--trajectory-units", choices=("radians", "cycles", "fov"), default=None,
                        help="override the trajectory units read from the file (non-Cartesian data)")
    parser.add_argument("--device", default="cpu", help="torch device: auto, cpu, cuda, cuda:0 ...")


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


class OfflineReconstructor:
    """Reconstructs samples with a fitting artifact (runners loaded once each) or the classical baseline."""

    def __init__(self, artifacts: list[Artifact], artifact: str | None, runner: str, device: torch.device,
                 method: str = "auto") -> None:
        self.artifacts = artifacts
        self.requested = artifact
        self.runner_kind = runner
        self.device = device
        self.method = method
        self._runners: dict[Path, Runner] = {}

    def _runner(self, artifact: Artifact) -> Runner:
        if artifact.path not in self._runners:
            self._runners[artifact.path] = load_runner(artifact.path, self.runner_kind, self.device)
        return self._runners[artifact.path]

    def reconstruct(self, sample: KSpaceSample) -> tuple[torch.Tensor, str]:
        """Magnitude image in recon space and the label of what made it (artifact label or classical method)."""
        artifact = None if self.requested == CLASSICAL else choose(self.artifacts, sample, self.requested)
        if artifact is None:
            result = classical_reconstruction(sample, method=self.method, device=self.device)
            return result.image, result.method
        preparation = artifact.manifest["preparation"]
        prepared = prepare_sample(sample, preparation["name"], preparation["params"], device=self.device)
        output = self._runner(artifact).run(collate([prepared]))
        image = output_to_image(output.to(prepared.scale.device), prepared.scale, prepared.recon_matrix)[0]
        return image, artifact.label


def run_recon(args: argparse.Namespace) -> int:
    if args.format not in AVAILABLE_FORMATS:
        print(f"mrdserve recon: --format {args.format} is not yet available (arrives with the runtime, issue 5); "
              f"use one of {', '.join(AVAILABLE_FORMATS)}", file=sys.stderr)
        return 2
    try:
        samples = read_samples(args.input, args.trajectory_units)
        artifacts = [] if args.artifact == CLASSICAL else load_artifacts(args.artifacts)
        reconstructor = OfflineReconstructor(artifacts, args.artifact, args.runner, resolve_device(args.device),
                                             args.method)
        args.output.mkdir(parents=True, exist_ok=True)
        for sample in samples:
            image, label = reconstructor.reconstruct(sample)
            image = image.detach().cpu().numpy()
            if image.ndim == 3:  # 3D volume: one PNG per partition
                for z, plane in enumerate(image):
                    write_png(plane, args.output / f"{output_name(sample, label)}_z{z:03d}.png")
            else:
                write_png(image, args.output / f"{output_name(sample, label)}.png")
            print(f"slice {sample.index.slice}: {label}")
    except (ValueError, FileNotFoundError) as exc:
        print(f"mrdserve recon: {exc}", file=sys.stderr)
        return 2
    print(f"reconstructed {len(samples)} image(s) from {args.input.name} into {args.output}")
    return 0
