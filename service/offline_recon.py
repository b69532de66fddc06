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
import numpy as np
import torch

from mrdserve.models.data.baseline import METHODS, classical_reconstruction
from mrdserve.models.data.fastmri import read_fastmri
from mrdserve.models.data.input_errors import InputError
from mrdserve.models.data.ismrmrd_inspect import HDF5_ERRORS, unreadable
from mrdserve.models.data.prepare import collate, output_to_image, prepare_sample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.admission import check_samples
from mrdserve.service.artifacts import Artifact, load_artifacts
from mrdserve.service.bounded_read import read_bounded
from mrdserve.service.config import budget_from_env
from mrdserve.service.engine.plan import CLASSICAL, Plan, plan_sample
from mrdserve.service.engine.result import ReconResult
from mrdserve.service.outputs.dicom import write_dicom_series
from mrdserve.service.outputs.ismrmrd_images import write_ismrmrd_images
from mrdserve.service.outputs.nifti import write_nifti
from mrdserve.service.outputs.package import write_pngs
from mrdserve.service.runners import RUNNER_KINDS, Runner, load_runner, resolve_device

FORMATS = ("png", "dicom", "nifti", "ismrmrd")


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
    parser.add_argument("--method", choices=METHODS, default="auto",
                        help="classical method wherever the classical path is used (artifact 'classical', or no "
                             "artifact validated for the data); auto: l1-wavelet for accelerated 2D data, coil "
                             "combination when fully sampled (default)")
    parser.add_argument("--trajectory-units", choices=("radians", "cycles", "fov"), default=None,
                        help="override the trajectory units read from the file (non-Cartesian data)")
    parser.add_argument("--device", default="cpu", help="torch device: auto, cpu, cuda, cuda:0 ...")


def read_samples(path: Path, trajectory_units: str | None = None) -> list[KSpaceSample]:
    """Read every sample of an ISMRMRD file, or of a fastMRI file (recognised by its `kspace` dataset)."""
    return read_input(path, trajectory_units)[1]


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
        return self._reconstruct_with(sample, plan_sample(self.artifacts, sample, self.requested))

    def _reconstruct_with(self, sample: KSpaceSample, plan: Plan) -> tuple[torch.Tensor, str]:
        artifact = plan.artifact
        if artifact is None:
            result = classical_reconstruction(sample, method=self.method, device=self.device,
                                              preferred=plan.classical_method)
            return result.image, result.method
        preparation = artifact.manifest["preparation"]
        prepared = prepare_sample(sample, preparation["name"], preparation["params"], device=self.device)
        output = self._runner(artifact).run(collate([prepared]))
        image = output_to_image(output.to(prepared.scale.device), prepared.scale, prepared.recon_matrix)[0]
        return image, artifact.label

    def reconstruct_result(self, sample: KSpaceSample) -> ReconResult:
        """``reconstruct`` as a ``ReconResult`` (what the output writers take), saying why a fallback was used."""
        plan = plan_sample(self.artifacts, sample, self.requested)
        image, label = self._reconstruct_with(sample, plan)
        array = image.detach().cpu().numpy().astype(np.float32)
        if plan.artifact is not None:
            return ReconResult(array, sample, label, artifact=plan.artifact.name, version=plan.artifact.version)
        return ReconResult(array, sample, f"classical:{label}", fallback_reason=plan.fallback_reason)


def write_outputs(results: list[ReconResult], header: Any, fmt: str, out_dir: Path) -> list[Path]:
    """Write ``results`` into ``out_dir``: PNGs or DICOM files one per slice, or one NIfTI / ISMRMRD file."""
    if fmt == "png":
        return write_pngs(results, out_dir)
    if fmt == "dicom":
        return write_dicom_series(results, header, out_dir)
    if fmt == "nifti":
        return [write_nifti(results, header, out_dir / "images.nii.gz")]
    if fmt == "ismrmrd":
        return [write_ismrmrd_images(results, header, out_dir / "images.h5")]
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def run_recon(args: argparse.Namespace) -> int:
    try:
        header, samples = read_input(args.input, args.trajectory_units)
        artifacts = [] if args.artifact == CLASSICAL else load_artifacts(args.artifacts)
        reconstructor = OfflineReconstructor(artifacts, args.artifact, args.runner, resolve_device(args.device),
                                             args.method)
        args.output.mkdir(parents=True, exist_ok=True)
        results = []
        for sample in samples:
            results.append(reconstructor.reconstruct_result(sample))
            print(f"slice {sample.index.slice}: {results[-1].label.removeprefix('classical:')}")
        written = write_outputs(results, header, args.format, args.output)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mrdserve recon: {exc}", file=sys.stderr)
        return 2
    print(f"reconstructed {len(samples)} image(s) from {args.input.name} into {args.output} "
          f"({len(written)} {args.format} file(s))")
    return 0
