"""Package results in the format a client asked for: one file to send back (DICOM and PNG series zipped)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrdserve.service.engine.result import ReconResult
from mrdserve.service.outputs.formats import OutputFormat, check_format, write_outputs
from mrdserve.service.outputs.png import write_png

MEDIA_TYPES = {OutputFormat.dicom: "application/zip", OutputFormat.png: "application/zip",
               OutputFormat.nifti: "application/gzip", OutputFormat.ismrmrd: "application/x-hdf5"}


@dataclass(frozen=True)
class Packaged:
    """A file ready to send: where it is, its media type, and the name to offer the client."""

    path: Path
    media_type: str
    filename: str


def output_stem(result: ReconResult) -> str:
    """A file-name stem naming the image's indices and its maker (artifact label or classical method)."""
    i = result.sample.index
    maker = (result.method or result.label).replace("/", "_").replace(" ", "_")  # learned: name-version
    return f"slice{i.slice:03d}_contrast{i.contrast:02d}_rep{i.repetition:02d}_set{i.set:02d}_{maker}"


def write_pngs(results: list[ReconResult], out_dir: Path) -> list[Path]:
    """One PNG preview per 2D image (per partition of a 3D volume); names say the indices and the maker."""
    out_dir = Path(out_dir)
    paths = []
    for result in results:
        stem = output_stem(result)
        if result.sample.index.phase:
            stem = f"{stem}_phase{result.sample.index.phase:02d}"
        if result.image.ndim == 3:
            paths += [write_png(plane, out_dir / f"{stem}_z{z:03d}.png") for z, plane in enumerate(result.image)]
        else:
            paths.append(write_png(result.image, out_dir / f"{stem}.png"))
    return paths


def _zip(files: list[Path], root: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            archive.write(file, arcname=str(file.relative_to(root)))
    return path


def package_results(results: list[ReconResult], header: Any, fmt: str, work_dir: Path) -> Packaged:
    """Write ``results`` as ``fmt`` under ``work_dir`` and return the one file to send back.

    dicom -> ``images-dicom.zip`` (one series), png -> ``images-png.zip``, nifti -> ``images.nii.gz``,
    ismrmrd -> ``images.h5`` (ISMRMRD images with the header).
    """
    chosen = check_format(fmt)
    if not results:
        raise ValueError("results: nothing to package (no images)")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if chosen in (OutputFormat.dicom, OutputFormat.png):  # a series of files, zipped
        folder = work_dir / chosen.value
        files = write_outputs(results, header, chosen, folder)
        path = _zip(files, folder, work_dir / f"images-{chosen.value}.zip")
    else:
        (path,) = write_outputs(results, header, chosen, work_dir)
    return Packaged(path, MEDIA_TYPES[chosen], path.name)
