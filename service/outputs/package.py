"""Package results in the format a client asked for: one file to send back (DICOM and PNG series zipped)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrdserve.service.engine.result import ReconResult
from mrdserve.service.outputs.formats import OutputFormat, check_format, write_outputs

MEDIA_TYPES = {OutputFormat.dicom: "application/zip", OutputFormat.png: "application/zip",
               OutputFormat.nifti: "application/gzip", OutputFormat.ismrmrd: "application/x-hdf5"}


@dataclass(frozen=True)
class Packaged:
    """A file ready to send: where it is, its media type, and the name to offer the client."""

    path: Path
    media_type: str
    filename: str


def _zip(files: list[Path], root: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            archive.write(file, arcname=str(file.relative_to(root)))
    return path


def package_results(results: list[ReconResult], header: Any, fmt: str, work_dir: Path) -> Packaged:
    """Write ``results`` as ``fmt`` under ``work_dir`` and return the one file to send back.

    dicom -> ``images-dicom.zip`` (one series, plus one per posterior role), png -> ``images-png.zip``,
    nifti -> ``images.nii.gz`` (``images-nifti.zip`` of one file per role when posterior images come along),
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
        files = write_outputs(results, header, chosen, work_dir)
        if len(files) > 1:  # NIfTI with posterior volumes
            return Packaged(_zip(files, work_dir, work_dir / f"images-{chosen.value}.zip"),
                            "application/zip", f"images-{chosen.value}.zip")
        (path,) = files
    return Packaged(path, MEDIA_TYPES[chosen], path.name)
