"""The output formats every entry point offers, and the one place that writes results in each of them."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from mrdserve.service.engine.result import ImageRole, ReconResult, with_derived


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


def by_role(results: list[ReconResult]) -> dict[ImageRole, list[ReconResult]]:
    """The results and the posterior images they carry, one list per role (reconstruction first)."""
    groups: dict[ImageRole, list[ReconResult]] = {}
    for result in with_derived(results):
        groups.setdefault(result.role, []).append(result)
    return groups


def write_outputs(results: list[ReconResult], header: Any, fmt: str, out_dir: Path) -> list[Path]:
    """Write ``results`` into ``out_dir``: DICOM or PNG files one per image, or one NIfTI / ISMRMRD file.

    Posterior images (``ReconResult.derived``) are series of their own: DICOM series in the sub-folders
    ``posterior-mean/`` and ``posterior-std/``, NIfTI files ``images-posterior-mean.nii.gz`` and
    ``images-posterior-std.nii.gz``, PNGs named by role, ISMRMRD image groups of the next series indices.
    """
    chosen = check_format(fmt)
    out_dir = Path(out_dir)
    groups = by_role(results)
    if chosen is OutputFormat.ismrmrd:
        from mrdserve.service.outputs.ismrmrd_images import write_ismrmrd_images

        return [write_ismrmrd_images(with_derived(results), header, out_dir / "images.h5")]
    written: list[Path] = []
    for role, members in groups.items():
        plain = role is ImageRole.reconstruction
        if chosen is OutputFormat.dicom:
            from mrdserve.service.outputs.dicom import write_dicom_series

            first = written[0] if written else None  # posterior series join the reconstruction's study
            written += write_dicom_series(members, header, out_dir if plain else out_dir / role.value,
                                          same_study_as=first)
        elif chosen is OutputFormat.png:
            from mrdserve.service.outputs.png import write_pngs

            written += write_pngs(members, out_dir)
        else:
            from mrdserve.service.outputs.nifti import write_nifti

            name = "images.nii.gz" if plain else f"images-{role.value}.nii.gz"
            written.append(write_nifti(members, header, out_dir / name))
    return written
