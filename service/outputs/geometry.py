"""Where reconstructed pixels lie in patient space (LPS, mm), from the ISMRMRD geometry of each sample.

ISMRMRD convention: ``position`` is the centre of the slice (of the volume in 3D), image columns (x) run along
``read_dir`` and rows (y) along ``phase_dir``; the recon-space field of view (x, y, z) divided by the image
matrix gives the pixel spacing. With our centred FFTs the pixel at index ``n // 2`` sits on the centre, so the
top-left pixel centre is ``position - (nx // 2) dx read_dir - (ny // 2) dy phase_dir`` (for even matrices this
is Gadgetron's ``position - fov / 2`` corner rule). 3D partitions step along ``slice_dir`` by ``fov_z / nz``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrdserve.service.engine.result import ReconResult

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Plane:
    """One 2D image plane: top-left pixel centre, unit axes, spacing and thickness (LPS, mm)."""

    origin: np.ndarray  # centre of pixel (row 0, column 0)
    row_dir: np.ndarray  # along a row: increasing column index (ISMRMRD read_dir)
    col_dir: np.ndarray  # down a column: increasing row index (ISMRMRD phase_dir)
    normal: np.ndarray  # row_dir x col_dir (the DICOM slice normal)
    spacing: tuple[float, float]  # (between rows, between columns) = (dy, dx), the DICOM PixelSpacing order
    thickness: float
    shape: tuple[int, int]  # (rows, columns)

    def to_patient(self, row: float, column: float) -> np.ndarray:
        """Patient coordinates (LPS, mm) of a pixel centre given by (row, column) indices."""
        dy, dx = self.spacing
        return self.origin + column * dx * self.row_dir + row * dy * self.col_dir

    @property
    def location(self) -> float:
        """Signed distance of the plane along its normal (DICOM SliceLocation; sorts slices)."""
        return float(self.origin @ self.normal)


def _unit(vector: tuple[float, float, float], name: str) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(array))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"geometry {name} must be a non-zero direction, got {vector}")
    return array / norm


def image_planes(result: ReconResult) -> list[Plane]:
    """The planes of a result: one for a 2D image, one per partition (index 0 first) for a 3D volume."""
    image = np.asarray(result.image)
    if image.ndim not in (2, 3):
        raise ValueError(f"result image must be [y, x] or [z, y, x], got shape {image.shape}")
    geometry = result.sample.geometry
    read, phase = _unit(geometry.read_dir, "read_dir"), _unit(geometry.phase_dir, "phase_dir")
    slice_dir = _unit(geometry.slice_dir, "slice_dir")
    fov_x, fov_y, fov_z = (float(v) for v in geometry.field_of_view)
    n_z = image.shape[0] if image.ndim == 3 else 1
    n_y, n_x = image.shape[-2:]
    dx, dy = fov_x / n_x, fov_y / n_y
    if min(dx, dy) <= 0:
        raise ValueError(f"geometry field_of_view must be positive, got {geometry.field_of_view}")
    thickness = fov_z / n_z if fov_z > 0 else 1.0
    centre = np.asarray(geometry.position, dtype=np.float64)
    corner = centre - (n_x // 2) * dx * read - (n_y // 2) * dy * phase
    normal = np.cross(read, phase)
    step = thickness * slice_dir
    return [Plane(origin=corner + (z - n_z // 2) * step if n_z > 1 else corner, row_dir=read, col_dir=phase,
                  normal=normal, spacing=(dy, dx), thickness=thickness, shape=(n_y, n_x))
            for z in range(n_z)]


def plane_images(result: ReconResult) -> list[np.ndarray]:
    """The 2D images matching ``image_planes(result)``."""
    image = np.asarray(result.image, dtype=np.float32)
    return list(image) if image.ndim == 3 else [image]
