"""The output formats every entry point offers, and the one place that writes results in each of them."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from mrdserve.service.engine.result import ReconResult


class OutputFormat(StrEnum):
    """What a client may ask for: a DICOM series, PNG previews, one NIfTI volume, or ISMRMRD images."""

    dicom = "dicom"
    nifti = "nifti"
    ismrmrd = "ismrmrd"
    png = "png"


FORMAT_NAMES = tuple(fmt.value for fmt in OutputFormat)


def check_format(fmt: str) -> OutputFormat:
    """``fmt`` as an ``OutputFormat``; ValueError naming the choices otherwise."""
    try:
        return OutputFormat(fmt)
    except ValueError:
        raise ValueError(f"format must be one of {', '.join(FORMAT_NAMES)}, got {fmt!r}") from None


def write_outputs(results: list[ReconResult], header: Any, fmt: str, out_dir: Path) -> list[Path]:
    """Write ``results`` into ``out_dir``: DICOM or PNG files one per image, or one NIfTI / ISMRMRD file."""
    chosen = check_format(fmt)
    out_dir = Path(out_dir)
    if chosen is OutputFormat.dicom:
        from mrdserve.service.outputs.dicom import write_dicom_series

        return write_dicom_series(results, header, out_dir)
    if chosen is OutputFormat.png:
        from mrdserve.service.outputs.png import write_pngs

        return write_pngs(results, out_dir)
    if chosen is OutputFormat.nifti:
        from mrdserve.service.outputs.nifti import write_nifti

        return [write_nifti(results, header, out_dir / "images.nii.gz")]
    from mrdserve.service.outputs.ismrmrd_images import write_ismrmrd_images

    return [write_ismrmrd_images(results, header, out_dir / "images.h5")]
