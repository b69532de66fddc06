"""NIfTI output: the results as one volume (2D slices stacked by position, or a 3D volume) with its affine.

NIfTI voxel (i, j, k) is (column, row, slice): i runs along read_dir, j along phase_dir, k from slice to slice
(sorted along the slice normal). The affine maps voxel centres to the same patient points as DICOM's
ImagePositionPatient/ImageOrientationPatient, converted from LPS (ISMRMRD, DICOM) to RAS (NIfTI) by negating
x and y. Several contrasts/repetitions/sets/phases of the same slices become a 4th dimension.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mrdserve.service.engine.result import ReconResult
from mrdserve.service.outputs.geometry import LPS_TO_RAS, Plane, image_planes, plane_images

_SAME_AXIS_TOLERANCE = 1e-3


def _frame_key(result: ReconResult) -> tuple[int, int, int, int]:
    index = result.sample.index
    return index.contrast, index.repetition, index.set, index.phase


def _stack(results: list[ReconResult]) -> tuple[np.ndarray, list[Plane]]:
    """``[z, y, x]`` planes of one frame sorted along the slice normal, with their planes."""
    pairs = [pair for result in results for pair in zip(image_planes(result), plane_images(result), strict=True)]
    pairs.sort(key=lambda pair: pair[0].location)
    first = pairs[0][0]
    for plane, _ in pairs[1:]:
        if plane.shape != first.shape:
            raise ValueError(f"cannot stack images of shapes {first.shape} and {plane.shape} into one NIfTI "
                             "volume")
        if (np.abs(plane.row_dir - first.row_dir).max() > _SAME_AXIS_TOLERANCE
                or np.abs(plane.col_dir - first.col_dir).max() > _SAME_AXIS_TOLERANCE):
            raise ValueError("cannot stack slices with different orientations into one NIfTI volume")
    return np.stack([image for _, image in pairs]), [plane for plane, _ in pairs]


def lps_affine(planes: list[Plane]) -> np.ndarray:
    """4x4 affine from voxel (column, row, slice) to LPS millimetres for planes sorted along the normal."""
    first = planes[0]
    dy, dx = first.spacing
    slice_step = first.normal * first.thickness
    if len(planes) > 1:
        measured = (planes[-1].origin - first.origin) / (len(planes) - 1)
        if np.linalg.norm(measured) > 1e-6:  # slices all at one position (synthetic data): keep the thickness
            slice_step = measured
    affine = np.eye(4)
    affine[:3, 0] = first.row_dir * dx
    affine[:3, 1] = first.col_dir * dy
    affine[:3, 2] = slice_step
    affine[:3, 3] = first.origin
    return affine


def nifti_image(results: list[ReconResult]) -> nib.Nifti1Image:
    """A NIfTI-1 image (x, y, z[, frames]) float32 with qform and sform set to the RAS affine."""
    if not results:
        raise ValueError("results: nothing to write (no images)")
    frames: dict[tuple[int, int, int, int], list[ReconResult]] = {}
    for result in results:
        frames.setdefault(_frame_key(result), []).append(result)
    stacks = [_stack(group) for _, group in sorted(frames.items())]
    shapes = {stack.shape for stack, _ in stacks}
    if len(shapes) > 1:
        raise ValueError(f"contrasts/repetitions have different volume shapes {sorted(shapes)}; cannot write "
                         "one NIfTI volume")
    volume, planes = stacks[0]
    data = np.stack([stack for stack, _ in stacks], axis=-1) if len(stacks) > 1 else volume[..., None]
    data = np.transpose(data, (2, 1, 0, 3))  # [z, y, x, t] -> [x, y, z, t]
    if data.shape[-1] == 1:
        data = data[..., 0]
    affine = LPS_TO_RAS @ lps_affine(planes)
    image = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code="scanner")
    image.set_sform(affine, code="scanner")
    return image


def write_nifti(results: list[ReconResult], header: Any, path: Path) -> Path:
    """Write the results as one NIfTI-1 file (``.nii`` or ``.nii.gz``); returns ``path``.

    ``header`` is accepted for symmetry with the other writers (NIfTI carries no patient or study fields).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nifti_image(results)
    image.header["descrip"] = b"mrdserve magnitude"
    nib.save(image, str(path))
    return path
