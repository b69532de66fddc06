"""The unit of work between ingest and reconstruction: one (slice, contrast, repetition, set) of k-space.

Readers (ISMRMRD files and streams, fastMRI files) and the simulator produce ``KSpaceSample``; the classical
baselines, the training preparation and the runtime consume it. Geometry is kept so that outputs (ISMRMRD
images, DICOM) can be placed in patient space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Geometry:
    """Slice placement from the acquisition headers and the field of view of the recon space (mm)."""

    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    read_dir: tuple[float, float, float] = (1.0, 0.0, 0.0)
    phase_dir: tuple[float, float, float] = (0.0, 1.0, 0.0)
    slice_dir: tuple[float, float, float] = (0.0, 0.0, 1.0)
    patient_table_position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    field_of_view: tuple[float, float, float] = (256.0, 256.0, 5.0)


@dataclass(frozen=True)
class SampleIndex:
    """Where a sample sits in the acquisition: ISMRMRD encoding counters."""

    slice: int = 0
    contrast: int = 0
    repetition: int = 0
    set: int = 0
    phase: int = 0  # cardiac/respiratory phase (ISMRMRD idx.phase); separate images, never averaged


@dataclass
class KSpaceSample:
    """k-space of one image (2D slice or 3D volume), coil-resolved, with what is needed to reconstruct it.

    Cartesian: ``kspace`` is ``[C, (kz,) ky, kx]`` complex64 with unsampled points zero, ``mask`` is a bool
    tensor broadcastable to it (``[(kz,) ky, 1]`` for line-wise sampling) and ``acs_mask`` marks the
    calibration (ACS) lines. Non-Cartesian: ``kspace`` is ``[C, K]``, ``trajectory`` is ``(d, K)`` in
    radians/sample in [-pi, pi) and ``density`` (optional) holds density-compensation weights ``(K,)``.

    ``matrix`` is the grid the data is reconstructed on (after readout-oversampling removal); ``recon_matrix``
    is the header's recon space, which outputs crop to.
    """

    kspace: torch.Tensor
    matrix: tuple[int, ...]
    recon_matrix: tuple[int, ...]
    trajectory_type: str = "cartesian"  # cartesian | radial | spiral | other
    mask: torch.Tensor | None = None
    acs_mask: torch.Tensor | None = None
    trajectory: torch.Tensor | None = None
    density: torch.Tensor | None = None
    index: SampleIndex = field(default_factory=SampleIndex)
    geometry: Geometry = field(default_factory=Geometry)
    acceleration: tuple[int, ...] = (1,)
    prewhitened: bool = False
    reference_head: Any = None  # the ismrmrd.AcquisitionHeader of the slice's first acquisition, if any

    @property
    def is_cartesian(self) -> bool:
        return self.trajectory is None

    @property
    def n_coils(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def n_spatial(self) -> int:
        return len(self.matrix)
