"""Admission: what a request will need, computed from its header and declared sizes before any data is read.

One check for every entry point (REST, MRD, the gadget, ``mrdserve recon``): ``admit_file`` for an ISMRMRD file,
``admit_header`` when a stream's header arrives, ``StreamBudget`` while a stream's acquisitions are buffered, and
``check_samples`` for the k-space itself (finite values), so that every entry point refuses the same inputs (the
gadget alone also takes EPI headers: Gadgetron has corrected the EPI readouts before they reach it).
Refusals are ``LimitError`` / ``InputError`` naming the limit and its setting; nothing is allocated from a header
value that was not checked here first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mrdserve.models.data.input_errors import InputError, LimitError
from mrdserve.models.data.ismrmrd_header import encoding_info, parse_header
from mrdserve.models.data.ismrmrd_inspect import DEFAULT_MAX_HEADER_BYTES, Declaration, inspect_ismrmrd
from mrdserve.models.data.sample import KSpaceSample

SUPPORTED_TRAJECTORIES = ("cartesian", "radial", "goldenangle", "spiral")
# EPI arrives at the gadget after Gadgetron's own EPI correction, as Cartesian lines; raw EPI elsewhere is refused
GADGET_TRAJECTORIES = (*SUPPORTED_TRAJECTORIES, "epi")
MAX_CHANNELS = 1024  # ISMRMRD's channel mask holds 1024 channels
BYTES_PER_RECORD = 512  # an acquisition header plus its in-memory bookkeeping, a floor for the record count check
WORKING_SET_FACTOR = 8  # 2D preparation and reconstruction hold about this many copies of one image's k-space
WORKING_SET_FACTOR_3D = 4  # 3D (classical CG-SENSE only): coil images, maps and a few volumes
CONCURRENT_IMAGES = 4  # images of one request in preparation/reconstruction at a time (the engine's batch)
NONCARTESIAN_GRID_OVERSAMPLING = 2.0  # NUFFT grids are oversampled this much per dimension
MIB = 1024**2


@dataclass(frozen=True)
class Budget:
    """Per-request limits (``MRDSERVE_MAX_MATRIX``, ``MRDSERVE_MAX_SLICES``, ``MRDSERVE_MAX_REQUEST_BYTES``)."""

    max_matrix: int = 1024  # largest encoded or recon size along any axis (readout oversampling included)
    max_slices: int = 1024  # images (slices x contrasts x repetitions x sets x phases) in one file
    max_request_bytes: int = 4 * 1024**3  # estimated memory one request may use
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_parse_s: float = 120.0  # reading one uploaded file (a corrupt HDF5 structure can make the reader loop)

    def __post_init__(self) -> None:
        for name in ("max_matrix", "max_slices", "max_request_bytes", "max_header_bytes", "max_parse_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def max_records(self) -> int:
        return max(1, self.max_request_bytes // BYTES_PER_RECORD)


@dataclass(frozen=True)
class Estimate:
    """What a request will need, in bytes, and where it comes from."""

    acquired_bytes: int  # the acquisitions as read (data + trajectories)
    kspace_bytes: int  # every image's assembled k-space
    working_bytes: int  # preparation and reconstruction of the images in flight

    @property
    def total_bytes(self) -> int:
        return self.acquired_bytes + self.kspace_bytes + self.working_bytes

    def describe(self) -> str:
        return (f"about {self.total_bytes / MIB:.0f} MiB (acquisitions {self.acquired_bytes / MIB:.0f}, k-space "
                f"{self.kspace_bytes / MIB:.0f}, working set {self.working_bytes / MIB:.0f})")


def _beyond(what: str, value: int, limit: int, setting: str) -> LimitError:
    return LimitError(f"{what} is {value}, beyond the limit of {limit} ({setting})")


def image_bytes(header: Any, channels: int) -> tuple[int, int]:
    """(k-space bytes of one assembled image, bytes its reconstruction works with) for ``channels`` coils.

    Cartesian images are kept without their readout oversampling; the full encoded grid exists only while one
    image is assembled (counted in the working set). Non-Cartesian k-space is the acquisitions themselves.
    """
    info = encoding_info(header)
    factor = WORKING_SET_FACTOR_3D if info.is_3d else WORKING_SET_FACTOR
    recon = math.prod(info.recon_matrix)
    if info.trajectory in ("cartesian", "epi"):
        _, y, z = info.encoded_matrix
        kept = info.readout_length_after_oversampling * y * z
        return 8 * channels * kept, 8 * channels * (factor * max(kept, recon) + math.prod(info.encoded_matrix))
    grid = recon * NONCARTESIAN_GRID_OVERSAMPLING ** (3 if info.is_3d else 2)
    return 0, int(factor * 8 * channels * grid)


def admit_header(header: Any, budget: Budget, channels: int | None = None,
                 trajectories: tuple[str, ...] = SUPPORTED_TRAJECTORIES) -> Any:
    """The parsed header, checked: supported trajectory, matrix and slice limits, one image within the budget."""
    header = parse_header(header)
    info = encoding_info(header)
    if info.trajectory not in trajectories:
        raise InputError(f"trajectory {info.trajectory!r} in the ISMRMRD header is not supported; supported: "
                         f"{', '.join(trajectories)}", "unsupported_trajectory")
    for space, matrix in (("encoded", info.encoded_matrix), ("recon", info.recon_matrix)):
        for axis, size in zip("xyz", matrix, strict=True):
            if size < 1:
                raise InputError(f"the header's {space} matrix size {axis} is {size}; it must be at least 1",
                                 "invalid_ismrmrd_header")
            if size > budget.max_matrix:
                raise _beyond(f"the header's {space} matrix size {axis}", size, budget.max_matrix,
                              "MRDSERVE_MAX_MATRIX")
    for space, fov in (("encoded", info.encoded_fov), ("recon", info.recon_fov)):
        if min(fov[:2]) <= 0 or fov[2] < 0:
            raise InputError(f"the header's {space} field of view {fov} mm must be positive (x, y) and not negative "
                             f"(z)", "invalid_ismrmrd_header")
    slices = declared_slices(header)
    if slices > budget.max_slices:
        raise _beyond("the number of slices the header declares", slices, budget.max_slices, "MRDSERVE_MAX_SLICES")
    coils = channels if channels is not None else (info.receiver_channels or 1)
    if not 1 <= coils <= MAX_CHANNELS:
        raise InputError(f"the header declares {coils} receiver channels; 1..{MAX_CHANNELS} are supported",
                         "invalid_ismrmrd_header")
    check_one_image(header, coils, budget)
    return header


def check_one_image(header: Any, channels: int, budget: Budget) -> None:
    """Refuse a header whose single image, with ``channels`` coils, needs more than the whole budget."""
    kspace, working = image_bytes(header, channels)
    if kspace + working > budget.max_request_bytes:
        info = encoding_info(header)
        raise LimitError(f"one image of this header needs about {(kspace + working) / MIB:.0f} MiB ({channels} "
                         f"coils, encoded matrix {'x'.join(map(str, info.encoded_matrix))}), beyond the limit of "
                         f"{budget.max_request_bytes / MIB:.0f} MiB (MRDSERVE_MAX_REQUEST_BYTES)")


def check_readout(info: Any, samples: int) -> None:
    """Refuse Cartesian readouts longer than twice the encoded readout (no placement can hold them)."""
    if info.trajectory in ("cartesian", "epi") and samples > info.encoded_matrix.x * 2:
        raise InputError(f"an acquisition holds {samples} samples, more than twice the encoded readout of "
                         f"{info.encoded_matrix.x}", "inconsistent_data")


def declared_slices(header: Any) -> int:
    """Slices the header's encoding limits declare (1 when it declares none)."""
    limits = header.encoding[0].encodingLimits
    slice_limit = getattr(limits, "slice", None) if limits is not None else None
    if slice_limit is None or slice_limit.maximum is None:
        return 1
    return max(1, int(slice_limit.maximum) - int(slice_limit.minimum or 0) + 1)


def estimate_file(declaration: Declaration) -> Estimate:
    """The memory a file's reconstruction will need, from its declaration."""
    channels = max(1, declaration.max_channels)
    kspace, working = image_bytes(declaration.header, channels)
    images = max(1, declaration.images)
    info = encoding_info(declaration.header)
    acquired = 0 if info.trajectory in ("cartesian", "epi") else declaration.payload_bytes  # Cartesian: kspace
    return Estimate(acquired_bytes=acquired, kspace_bytes=kspace * images,
                    working_bytes=working * min(images, CONCURRENT_IMAGES))


def admit_file(path: str | Path, group: str, budget: Budget) -> Declaration:
    """Inspect an ISMRMRD file and refuse it (``InputError``/``LimitError``) unless it fits the budget."""
    declaration = inspect_ismrmrd(path, group, max_header_bytes=budget.max_header_bytes,
                                  max_records=budget.max_records)
    if declaration.max_channels > MAX_CHANNELS:
        raise InputError(f"an acquisition declares {declaration.max_channels} active channels; at most "
                         f"{MAX_CHANNELS} are supported", "inconsistent_data")
    admit_header(declaration.header, budget, channels=max(1, declaration.max_channels))
    check_readout(encoding_info(declaration.header), declaration.max_samples)
    if declaration.images > budget.max_slices:
        raise _beyond("the number of images in the file", declaration.images, budget.max_slices,
                      "MRDSERVE_MAX_SLICES")
    if declaration.max_slice_index >= budget.max_slices:
        raise _beyond("the largest slice index", declaration.max_slice_index, budget.max_slices - 1,
                      "MRDSERVE_MAX_SLICES")
    estimate = estimate_file(declaration)
    if estimate.total_bytes > budget.max_request_bytes:
        raise LimitError(f"reconstructing this file needs {estimate.describe()}, beyond the limit of "
                         f"{budget.max_request_bytes / MIB:.0f} MiB (MRDSERVE_MAX_REQUEST_BYTES)")
    return declaration


class StreamBudget:
    """Bounds what one stream holds (incomplete images, noise scans, slices waiting to be reconstructed) by the
    request budget, and checks each acquisition's declared sizes before its image is assembled."""

    def __init__(self, header: Any, budget: Budget) -> None:
        self.budget = budget
        self.header = header
        self.info = encoding_info(header)
        self._channels_checked: set[int] = set()

    def check_acquisition(self, channels: int, samples: int) -> None:
        """Refuse an acquisition whose channels or samples no image within the budget can hold."""
        if not 1 <= channels <= MAX_CHANNELS:
            raise InputError(f"an acquisition declares {channels} active channels; 1..{MAX_CHANNELS} are supported",
                             "inconsistent_data")
        check_readout(self.info, samples)
        if channels not in self._channels_checked:  # the header's image with this many coils must fit
            check_one_image(self.header, channels, self.budget)
            self._channels_checked.add(channels)

    def check_buffered(self, buffered_bytes: int) -> None:
        """Refuse a stream whose incomplete images and noise scans hold more than the budget."""
        if buffered_bytes > self.budget.max_request_bytes:
            raise LimitError(f"the stream's incomplete images hold {buffered_bytes / MIB:.0f} MiB, beyond the "
                             f"limit of {self.budget.max_request_bytes / MIB:.0f} MiB (MRDSERVE_MAX_REQUEST_BYTES)")


def check_samples(samples: Sequence[KSpaceSample]) -> None:
    """Refuse k-space holding NaN or infinite values (the same policy on every entry point)."""
    for sample in samples:
        if not bool(torch.isfinite(torch.view_as_real(sample.kspace)).all()):
            raise InputError(f"the k-space of slice {sample.index.slice} (contrast {sample.index.contrast}, "
                             f"repetition {sample.index.repetition}) holds NaN or infinite values",
                             "non_finite_data")
