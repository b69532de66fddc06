"""The unit of work between ingest and reconstruction: one (slice, contrast, repetition, set) of k-space.

Readers (ISMRMRD files and streams, fastMRI files) and the simulator produce ``KSpaceSample``; the classical
baselines, the training preparation and the runtime consume it. Geometry is kept so that outputs (ISMRMRD
images, DICOM) can be placed in patient space.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from mrdserve.models.physics.nufft_cache import trajectory_hash


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


@dataclass(frozen=True)
class KSpaceSample:
    """k-space of one image (2D slice or 3D volume), coil-resolved, with what is needed to reconstruct it.

    Cartesian: ``kspace`` is ``[C, (kz,) ky, kx]`` complex64 with unsampled points zero, ``mask`` is a bool
    tensor broadcastable to it (``[(kz,) ky, 1]`` for line-wise sampling) and ``acs_mask`` marks the
    calibration (ACS) lines. Non-Cartesian: ``kspace`` is ``[C, K]``, ``trajectory`` is ``(d, K)`` in
    radians/sample in [-pi, pi) and ``density`` (optional) holds density-compensation weights ``(K,)``.

    ``matrix`` is the grid the data is reconstructed on (after readout-oversampling removal); ``recon_matrix``
    is the header's recon space, which outputs crop to.

    ``trajectory_key`` is the trajectory's cache key (``trajectory_hash``), computed once per sample and reused by
    the preparation (density weights, NUFFT plans, Toeplitz kernel) and the runtime's cache accounting.

    Frozen: a step that changes a sample (prewhitening, a move to a device) makes a new one
    (``dataclasses.replace``, ``to``).
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
    # (the trajectory hashed, its in-place version counter then, its hash): the memo behind ``trajectory_key``
    _trajectory_key_memo: tuple[torch.Tensor, int, str] | None = field(default=None, init=False, repr=False,
                                                                       compare=False)

    def to(self, device: torch.device | str) -> KSpaceSample:
        """This sample with its tensors on ``device`` (a new sample; this one is unchanged)."""
        names = ("kspace", "mask", "acs_mask", "trajectory", "density")
        moved = {name: getattr(self, name).to(device) for name in names if getattr(self, name) is not None}
        return replace(self, **moved)

    @property
    def is_cartesian(self) -> bool:
        return self.trajectory is None

    @property
    def n_coils(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def n_spatial(self) -> int:
        return len(self.matrix)

    @property
    def trajectory_key(self) -> str | None:
        """``trajectory_hash(trajectory)`` (None for Cartesian data), hashed once and memoised; recomputed only if
        ``trajectory`` is replaced or modified in place."""
        trajectory = self.trajectory
        if trajectory is None:
            return None
        memo = self._trajectory_key_memo
        if memo is None or memo[0] is not trajectory or memo[1] != trajectory._version:
            memo = (trajectory, trajectory._version, trajectory_hash(trajectory))
            object.__setattr__(self, "_trajectory_key_memo", memo)  # a cache, not state: allowed when frozen
        return memo[2]
