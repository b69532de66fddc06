"""Synthetic acquisitions (Cartesian and non-Cartesian, multicoil, noisy) with their ground truth, to files.

Used by ``mrdserve simulate``, the demos and the tests. A simulation draws a complex head phantom per slice
(``phantoms``), receive coils and correlated receiver noise (``coils``), and acquires it with the physics
operators: the centred FFT with a fastMRI-style mask along ky (Cartesian) or the NUFFT along a radial or
spiral trajectory. Files are written with the ISMRMRD or fastMRI writers; the ground truth rides along in the
same HDF5 file under ``/mrdserve`` (ISMRMRD readers look only at ``/dataset``).

3D (one volume per "slice" index, matrix (z, y, x), 3D phantom and coil rings): "cartesian3d" encodes z as
kz partitions (ISMRMRD ``kspace_encode_step_2``) and undersamples only along ky, with one fastMRI-style ky
mask shared by every partition (kz fully sampled), so the mask is ``(kz, ky)``; "stack-of-stars" repeats a
golden-angle radial pattern on every Cartesian kz partition; "radial3d" is a golden-means kooshball. The 3D
non-Cartesian files carry a (kx, ky, kz) trajectory per sample and an encoded matrix z = partitions.

Noise level: ``noise_level`` is the noise standard deviation per coil-image pixel relative to the phantom's
peak magnitude (1): with orthonormal FFTs that is also the std of each complex k-space sample.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from mrdserve.models.data.acquisitions import remove_readout_oversampling
from mrdserve.models.data.coils import (
    add_noise,
    coil_sensitivities_2d,
    coil_sensitivities_3d,
    noise_samples,
    random_coil_covariance,
)
from mrdserve.models.data.ismrmrd_header import build_header
from mrdserve.models.data.phantoms import complex_phantom_2d, complex_phantom_3d
from mrdserve.models.physics.fft import fftnc
from mrdserve.models.physics.masks import EquispacedFractionMask, EquispacedMask, MaskFunc, RandomMask, acs_lines
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.trajectories import (
    radial_2d,
    radial_3d,
    spiral_2d,
    spiral_turns_for_nyquist,
    stack_of_stars,
)

__all__ = [
    "MASK_TYPES",
    "TRAJECTORIES",
    "TRAJECTORIES_3D",
    "Simulation",
    "add_simulate_arguments",
    "read_ground_truth",
    "remove_readout_oversampling",
    "run_simulate",
    "simulate_cartesian",
    "simulate_cartesian_3d",
    "simulate_noncartesian",
    "simulate_to_file",
    "write_simulation",
]

TRAJECTORIES_3D = ("cartesian3d", "stack-of-stars", "radial3d")
TRAJECTORIES = ("cartesian", "radial", "spiral", *TRAJECTORIES_3D)
NONCARTESIAN = ("radial", "spiral", "stack-of-stars", "radial3d")
# ISMRMRD header trajectory type and trajectoryDescription identifier of each non-Cartesian kind.
_HEADER_TRAJECTORY = {"radial": ("radial", None), "spiral": ("spiral", None),
                      "stack-of-stars": ("radial", "stack-of-stars"), "radial3d": ("radial", "radial3d")}
DEFAULT_MATRIX_2D, DEFAULT_MATRIX_3D = 256, 64
MASK_TYPES: dict[str, type[MaskFunc]] = {
    "random": RandomMask, "equispaced": EquispacedMask, "equispaced_fraction": EquispacedFractionMask}
FILE_LAYOUTS = ("ismrmrd", "fastmri")
GROUND_TRUTH_GROUP = "mrdserve"


@dataclass
class Simulation:
    """A synthetic acquisition and what made it.

    Cartesian: ``kspace`` ``[S, C, (kz,) ky, kx * readout_oversampling]`` complex64 with unsampled lines
    zero, ``mask``/``acs`` bool ``((kz,) ky)``. Non-Cartesian: ``kspace`` ``[S, C, K]``, ``trajectory``
    ``(d, K)`` in radians/sample, ``samples_per_readout`` samples per spoke/interleave (stacks:
    ``readouts_per_partition`` spokes per kz partition, partition-major). ``matrix`` is (y, x) or (z, y, x);
    ``ground_truth`` is the complex image ``[S, (z,) y, x]`` on it and ``smaps`` the coil maps
    ``[C, (z,) y, x]`` there (RSS = 1), so ``ground_truth.abs()`` is also the RSS of fully sampled coil
    images. ``noise`` is a noise scan ``[C, N]`` with the data's noise covariance ``noise_covariance``
    (``sigma^2 Psi``), or None. ``fov_mm`` is the recon FOV (x, y, z).
    """

    kspace: torch.Tensor
    ground_truth: torch.Tensor
    smaps: torch.Tensor
    trajectory_type: str
    matrix: tuple[int, ...]
    acceleration: float
    readout_oversampling: int = 1
    mask: torch.Tensor | None = None
    acs: torch.Tensor | None = None
    trajectory: torch.Tensor | None = None
    samples_per_readout: int | None = None
    readouts_per_partition: int | None = None
    noise: torch.Tensor | None = None
    noise_covariance: torch.Tensor | None = None
    noise_sigma: float = 0.0
    seed: int = 0
    fov_mm: tuple[float, float, float] = (256.0, 256.0, 5.0)

    @property
    def n_slices(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def n_coils(self) -> int:
        return int(self.kspace.shape[1])

    @property
    def is_3d(self) -> bool:
        return len(self.matrix) == 3

    @property
    def achieved_acceleration(self) -> float:
        """Cartesian: ky lines over sampled lines; non-Cartesian: the requested factor."""
        if self.mask is None:
            return float(self.acceleration)
        return self.mask.numel() / float(self.mask.sum())


def _seeds(seed: int, count: int) -> list[int]:
    """Independent sub-seeds (phantoms, coils, mask, noise...) derived from one user seed."""
    return [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(count)]


def _sizes(shape: int | Sequence[int], n_dims: int) -> tuple[int, ...]:
    return (int(shape),) * n_dims if isinstance(shape, int | np.integer) else tuple(int(n) for n in shape)


def _matrix(shape: int | Sequence[int]) -> tuple[int, int]:
    """(y, x) from a square size or two sizes, each at least 16."""
    matrix = _sizes(shape, 2)
    if len(matrix) != 2 or min(matrix) < 16:
        raise ValueError(f"shape (matrix) must be two sizes of at least 16, got {shape}")
    return matrix[0], matrix[1]


def _matrix_3d(shape: int | Sequence[int]) -> tuple[int, int, int]:
    """(z, y, x) from a cube size or three sizes: in-plane at least 16, at least 8 partitions."""
    matrix = _sizes(shape, 3)
    if len(matrix) != 3 or min(matrix[1:]) < 16 or matrix[0] < 8:
        raise ValueError(f"shape (matrix) must be (z, y, x) with y, x >= 16 and z >= 8, got {shape}")
    return matrix[0], matrix[1], matrix[2]


def _fov(fov_mm: Sequence[float]) -> tuple[float, float, float]:
    """A recon FOV as (x, y, z) floats in mm; a clear error for any other length."""
    if len(fov_mm) != 3:
        raise ValueError(f"fov_mm must be (x, y, z) in mm, got {tuple(fov_mm)}")
    return float(fov_mm[0]), float(fov_mm[1]), float(fov_mm[2])


def _fov_3d(matrix: tuple[int, ...], fov_mm: Sequence[float] | None) -> tuple[float, float, float]:
    """The given recon FOV (x, y, z), or 256 mm in-plane with isotropic voxels along z."""
    if fov_mm is not None:
        return _fov(fov_mm)
    return (256.0, 256.0, 256.0 * matrix[0] / matrix[1])


def _check_common(n_coils: int, n_slices: int, noise_level: float, acceleration: float) -> None:
    if int(n_coils) != n_coils or n_coils < 1:
        raise ValueError(f"n_coils must be a positive integer, got {n_coils}")
    if int(n_slices) != n_slices or n_slices < 1:
        raise ValueError(f"n_slices must be a positive integer, got {n_slices}")
    if not noise_level >= 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    if not acceleration >= 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")


CONTENTS = ("textured", "piecewise", "mixed")


def _phantoms(matrix: tuple[int, ...], n_slices: int, seed: int, content: str = "textured") -> torch.Tensor:
    """One independent complex phantom per slice (or volume), ``[S, (z,) y, x]`` complex64.

    ``content``: "textured" (anatomy with power-law texture and fine detail), "piecewise" (the anatomy's
    piecewise-constant ellipses only, 2D) or "mixed" (2D slices alternate: even textured, odd piecewise)."""
    if content not in CONTENTS:
        raise ValueError(f"content must be one of {', '.join(CONTENTS)}, got {content!r}")
    if len(matrix) == 3:
        return torch.stack([complex_phantom_3d(matrix, seed=s) for s in _seeds(seed, n_slices)])  # type: ignore
    images = []
    for index, s in enumerate(_seeds(seed, n_slices)):
        textured = content == "textured" or (content == "mixed" and index % 2 == 0)
        images.append(complex_phantom_2d(matrix, seed=s, texture=textured, detail=textured))  # type: ignore
    return torch.stack(images)


def _coil_maps(n_coils: int, shape: tuple[int, ...], seed: int,
               extent: tuple[float, ...] | None = None) -> torch.Tensor:
    """RSS-normalised coil maps ``[C, (z,) y, x]``: a ring of loops in 2D, rings of loops in 3D."""
    if len(shape) == 3:
        return coil_sensitivities_3d(n_coils, shape, seed=seed, extent=extent)  # type: ignore[arg-type]
    return coil_sensitivities_2d(n_coils, shape, seed=seed, extent=extent)  # type: ignore[arg-type]


def _add_receiver_noise(kspace: torch.Tensor, sigma: float, correlation: float, seed: int,
                        noise_scan_samples: int | None, mask: torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Noisy ``kspace`` ``[S, C, ...]`` (noise covariance sigma^2 Psi), a matching noise scan, sigma^2 Psi."""
    if sigma == 0:
        return kspace if mask is None else kspace * mask, None, None
    cov_seed, data_seed, scan_seed = _seeds(seed, 3)
    n_coils = kspace.shape[1]
    psi = (random_coil_covariance(n_coils, correlation, seed=cov_seed) if n_coils > 1
           else torch.eye(1, dtype=torch.complex64))
    noisy = add_noise(kspace, sigma=sigma, covariance=psi, seed=data_seed, coil_dim=1, mask=mask)
    if mask is not None:
        noisy = noisy * mask
    scan = None
    if noise_scan_samples:
        scan = noise_samples(n_coils, noise_scan_samples, sigma=sigma, covariance=psi, seed=scan_seed)
    return noisy, scan, sigma**2 * psi


def _mask(kind: str, n_lines: int, acceleration: float, center_fraction: float,
          seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if kind not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {', '.join(MASK_TYPES)}, got {kind!r}")
    if acceleration == 1:
        mask = np.ones(n_lines, dtype=bool)
        acs = acs_lines(n_lines, max(1, round(n_lines * center_fraction)))
        return torch.from_numpy(mask), torch.from_numpy(acs)
    func: MaskFunc = MASK_TYPES[kind]([center_fraction], [acceleration], seed=seed)
    drawn = func(n_lines)
    return torch.from_numpy(drawn.mask.copy()), torch.from_numpy(drawn.acs.copy())


def _check_cartesian(readout_oversampling: int, center_fraction: float) -> None:
    if int(readout_oversampling) != readout_oversampling or readout_oversampling < 1:
        raise ValueError(f"readout_oversampling must be a positive integer, got {readout_oversampling}")
    if not 0 < center_fraction < 1:
        raise ValueError(f"center_fraction must lie in (0, 1), got {center_fraction}")


def _acquire_cartesian(matrix: tuple[int, ...], n_coils: int, acceleration: float, center_fraction: float,
                       mask_type: str, n_slices: int, noise_level: float, readout_oversampling: int,
                       with_noise_scan: bool, seed: int, noise_correlation: float,
                       fov_mm: tuple[float, ...], content: str = "textured") -> Simulation:
    """Cartesian acquisition of a 2D (y, x) or 3D (z, y, x) matrix; the ky mask is shared along kz.

    Readout oversampling is simulated physically: each coil image lives on a FOV ``readout_oversampling``
    times wider along x (object zero-padded, coil maps extended), so removing the oversampling (inverse FFT
    along x, central crop, FFT) gives back exactly the recon-size coil images.
    """
    _check_common(n_coils, n_slices, noise_level, acceleration)
    _check_cartesian(readout_oversampling, center_fraction)
    phantom_seed, coil_seed, mask_seed, noise_seed = _seeds(seed, 4)
    nx = matrix[-1]
    wide = (*matrix[:-1], nx * readout_oversampling)
    start = wide[-1] // 2 - nx // 2

    images = _phantoms(matrix, n_slices, phantom_seed, content)
    padded = torch.zeros((n_slices, *wide), dtype=torch.complex64)
    padded[..., start:start + nx] = images
    extent = (1.0,) * (len(matrix) - 1) + (float(readout_oversampling),)
    wide_maps = _coil_maps(n_coils, wide, coil_seed, extent)
    full = fftnc(wide_maps.unsqueeze(0) * padded.unsqueeze(1), len(matrix))

    lines, acs_rows = _mask(mask_type, matrix[-2], float(acceleration), center_fraction, mask_seed)
    mask, acs = lines.expand(*matrix[:-1]).contiguous(), acs_rows.expand(*matrix[:-1]).contiguous()
    sigma = float(noise_level)
    kspace, scan, covariance = _add_receiver_noise(full, sigma, noise_correlation, noise_seed,
                                                   64 * wide[-1] if with_noise_scan else None,
                                                   mask=mask.unsqueeze(-1))
    return Simulation(
        kspace=kspace, ground_truth=images, smaps=wide_maps[..., start:start + nx].contiguous(),
        trajectory_type="cartesian3d" if len(matrix) == 3 else "cartesian", matrix=matrix,
        acceleration=float(acceleration), readout_oversampling=int(readout_oversampling), mask=mask, acs=acs,
        noise=scan, noise_covariance=covariance, noise_sigma=sigma, seed=int(seed), fov_mm=_fov(fov_mm))


def simulate_cartesian(shape: int | tuple[int, int] = (256, 256), n_coils: int = 8, acceleration: float = 4,
                       center_fraction: float = 0.08, mask_type: str = "equispaced_fraction",
                       n_slices: int = 1, noise_level: float = 0.01, readout_oversampling: int = 2,
                       with_noise_scan: bool = True, seed: int = 0, noise_correlation: float = 0.2,
                       fov_mm: tuple[float, float, float] = (256.0, 256.0, 5.0),
                       content: str = "textured") -> Simulation:
    """2D multislice Cartesian acquisition, undersampled along ky with a fastMRI-style mask.

    Readout oversampling is simulated physically (see ``_acquire_cartesian``). One mask for all slices.
    ``content``: the phantoms' image content (``_phantoms``).
    """
    return _acquire_cartesian(_matrix(shape), n_coils, acceleration, center_fraction, mask_type, n_slices,
                              noise_level, readout_oversampling, with_noise_scan, seed, noise_correlation,
                              fov_mm, content)


def simulate_cartesian_3d(shape: int | tuple[int, int, int] = (64, 64, 64), n_coils: int = 8,
                          acceleration: float = 4, center_fraction: float = 0.08,
                          mask_type: str = "equispaced_fraction", n_volumes: int = 1,
                          noise_level: float = 0.01, readout_oversampling: int = 2,
                          with_noise_scan: bool = True, seed: int = 0, noise_correlation: float = 0.2,
                          fov_mm: tuple[float, float, float] | None = None) -> Simulation:
    """3D Cartesian acquisition of a (z, y, x) volume with kz partitions, undersampled along ky only.

    The fastMRI-style ky mask (and its ACS lines) is the same for every kz partition and kz is fully
    sampled, so ``mask``/``acs`` are ``(kz, ky)`` with identical rows; acceleration = ky lines / sampled.
    ``fov_mm`` (x, y, z) defaults to 256 mm in-plane with isotropic voxels.
    """
    matrix = _matrix_3d(shape)
    return _acquire_cartesian(matrix, n_coils, acceleration, center_fraction, mask_type, n_volumes,
                              noise_level, readout_oversampling, with_noise_scan, seed, noise_correlation,
                              _fov_3d(matrix, fov_mm))


def _trajectory(kind: str, n: int, acceleration: float, n_readouts: int | None,
                n_samples: int | None) -> tuple[torch.Tensor, int, int]:
    """(trajectory (2, K), samples per readout, readouts) for a radial or spiral acquisition of an n x n grid.

    Defaults: radial has pi/2 * n / R spokes of 2n samples (2x readout oversampling); spiral has
    max(4, n // 8) / R interleaves with the turns that make the full set Nyquist, and enough samples;
    an accelerated spiral is variable-density (Nyquist centre, R-fold undersampled periphery).
    """
    if kind == "radial":
        readouts = n_readouts or max(1, round(math.pi / 2 * n / acceleration))
        samples = n_samples or 2 * n
        return radial_2d(readouts, samples), samples, readouts
    full_interleaves = max(4, n // 8)
    readouts = n_readouts or max(1, round(full_interleaves / acceleration))
    turns = spiral_turns_for_nyquist(n, full_interleaves)
    samples = n_samples or math.ceil(math.pi * turns * n)
    if readouts >= full_interleaves:
        return spiral_2d(readouts, samples, matrix=n, n_turns=turns), samples, readouts
    # Accelerated: variable density keeps the centre Nyquist-sampled, so coil maps can come from it.
    undersampled = spiral_2d(readouts, samples, matrix=n, undersampling=full_interleaves / readouts)
    return undersampled, samples, readouts


def _trajectory_3d(kind: str, n_partitions: int, n: int, acceleration: float, n_readouts: int | None,
                   n_samples: int | None) -> tuple[torch.Tensor, int, int | None]:
    """(trajectory (3, K), samples per readout, spokes per partition or None) for a 3D radial kind.

    Defaults: 2n samples per spoke; stack-of-stars has pi/2 * n / R golden-angle spokes on each of the
    ``n_partitions`` kz partitions (``n_readouts`` counts spokes per partition); radial3d has
    pi/2 * n^2 / R golden-means spokes (the Nyquist count for full-diameter spokes over R).
    """
    samples = n_samples or 2 * n
    if kind == "stack-of-stars":
        spokes = n_readouts or max(1, round(math.pi / 2 * n / acceleration))
        return stack_of_stars(spokes, samples, n_partitions), samples, spokes
    spokes = n_readouts or max(1, round(math.pi / 2 * n * n / acceleration))
    return radial_3d(spokes, samples), samples, None


def simulate_noncartesian(trajectory: str = "radial", shape: int | tuple[int, ...] = (256, 256),
                          n_coils: int = 8, acceleration: float = 4, n_readouts: int | None = None,
                          n_samples: int | None = None, n_slices: int = 1, noise_level: float = 0.01,
                          with_noise_scan: bool = True, seed: int = 0, noise_correlation: float = 0.2,
                          backend: str = "auto",
                          fov_mm: tuple[float, float, float] | None = None) -> Simulation:
    """Radial or spiral (2D multislice), stack-of-stars or radial3d (3D) acquisition through the NUFFT.

    ``shape`` is (y, x) in 2D and (z, y, x) (z = partitions) in 3D, square in-plane; an int is a square or a
    cube. ``n_readouts`` (spokes or interleaves; per partition for stack-of-stars) and ``n_samples`` (per
    readout) override the defaults derived from ``acceleration`` (see ``_trajectory``/``_trajectory_3d``);
    ``acceleration`` is then recorded as given. ``n_slices`` counts slices (2D) or volumes (3D);
    ``fov_mm`` defaults to (256, 256, 5) in 2D and 256 mm in-plane with isotropic voxels in 3D.
    """
    if trajectory not in NONCARTESIAN:
        raise ValueError(f"trajectory must be one of {', '.join(NONCARTESIAN)}, got {trajectory!r}")
    is_3d = trajectory in TRAJECTORIES_3D
    matrix: tuple[int, ...] = _matrix_3d(shape) if is_3d else _matrix(shape)
    if matrix[-2] != matrix[-1]:
        raise ValueError(f"non-Cartesian simulation needs a square in-plane matrix, got {matrix}")
    _check_common(n_coils, n_slices, noise_level, acceleration)
    phantom_seed, coil_seed, noise_seed = _seeds(seed, 3)
    per_partition = None
    if is_3d:
        traj, per_readout, per_partition = _trajectory_3d(trajectory, matrix[0], matrix[-1], float(acceleration),
                                                          n_readouts, n_samples)
        fov = _fov_3d(matrix, fov_mm)
    else:
        traj, per_readout, _ = _trajectory(trajectory, matrix[0], float(acceleration), n_readouts, n_samples)
        fov = _fov(fov_mm) if fov_mm is not None else (256.0, 256.0, 5.0)

    images = _phantoms(matrix, n_slices, phantom_seed)
    maps = _coil_maps(n_coils, matrix, coil_seed)
    operator = NufftOp(traj, matrix, smaps=maps.unsqueeze(0), backend=backend)
    clean = torch.cat([operator.forward(image.unsqueeze(0)) for image in images]).to(torch.complex64)
    sigma = float(noise_level)
    kspace, scan, covariance = _add_receiver_noise(clean, sigma, noise_correlation, noise_seed,
                                                   64 * per_readout if with_noise_scan else None)
    return Simulation(
        kspace=kspace, ground_truth=images, smaps=maps, trajectory_type=trajectory, matrix=matrix,
        acceleration=float(acceleration), trajectory=traj, samples_per_readout=per_readout,
        readouts_per_partition=per_partition, noise=scan, noise_covariance=covariance, noise_sigma=sigma,
        seed=int(seed), fov_mm=fov)


def _write_ground_truth(path: Path, sim: Simulation) -> None:
    """Add ``/mrdserve/{ground_truth, sensitivities[, mask, acs]}`` and the simulation settings as attrs."""
    with h5py.File(path, "a") as f:
        if GROUND_TRUTH_GROUP in f:
            del f[GROUND_TRUTH_GROUP]
        group = f.create_group(GROUND_TRUTH_GROUP)
        group.create_dataset("ground_truth", data=sim.ground_truth.cpu().numpy())
        group.create_dataset("sensitivities", data=sim.smaps.cpu().numpy())
        if sim.mask is not None and sim.acs is not None:
            group.create_dataset("mask", data=sim.mask.cpu().numpy())
            group.create_dataset("acs", data=sim.acs.cpu().numpy())
        if sim.noise_covariance is not None:
            group.create_dataset("noise_covariance", data=sim.noise_covariance.cpu().numpy())
        group.attrs.update({
            "trajectory_type": sim.trajectory_type, "acceleration": sim.acceleration,
            "achieved_acceleration": sim.achieved_acceleration, "noise_sigma": sim.noise_sigma,
            "seed": sim.seed, "readout_oversampling": sim.readout_oversampling,
            "matrix": np.asarray(sim.matrix)})


def read_ground_truth(path: str | Path) -> torch.Tensor:
    """The complex ground truth ``[S, y, x]`` a simulation stored in ``path``."""
    with h5py.File(path, "r") as f:
        if GROUND_TRUTH_GROUP not in f:
            raise ValueError(f"{path} holds no simulation ground truth (no /{GROUND_TRUTH_GROUP} group)")
        return torch.from_numpy(f[GROUND_TRUTH_GROUP]["ground_truth"][...])


def write_simulation(path: str | Path, sim: Simulation, fmt: str = "ismrmrd") -> Path:
    """Write ``sim`` as an ISMRMRD (or fastMRI) HDF5 file, with the ground truth under ``/mrdserve``.

    Cartesian k-space is stored exactly as simulated (oversampled readout, noise in the margin included);
    3D Cartesian partitions become ``kspace_encode_step_2``; non-Cartesian trajectories are stored per sample.
    """
    from mrdserve.models.data import ismrmrd_write

    path = Path(path)
    if fmt not in FILE_LAYOUTS:
        raise ValueError(f"format must be one of {', '.join(FILE_LAYOUTS)}, got {fmt!r}")
    acceleration = max(1, round(sim.acceleration))
    if fmt == "fastmri":
        _write_fastmri(path, sim)
    elif sim.mask is not None:
        ismrmrd_write.write_ismrmrd_cartesian(
            path, sim.kspace, sim.mask.unsqueeze(-1), None if sim.acs is None else sim.acs.unsqueeze(-1),
            fov_mm=sim.fov_mm, readout_oversampling=sim.readout_oversampling, kspace_is_oversampled=True,
            noise=sim.noise, acceleration=acceleration)
    else:
        header_type, identifier = _HEADER_TRAJECTORY[sim.trajectory_type]
        ismrmrd_write.write_ismrmrd_noncartesian(
            path, sim.kspace, sim.trajectory, int(sim.samples_per_readout or sim.kspace.shape[-1]),
            matrix=sim.matrix, trajectory_type=header_type, trajectory_identifier=identifier,
            readouts_per_partition=sim.readouts_per_partition, fov_mm=sim.fov_mm, noise=sim.noise,
            acceleration=acceleration)
    _write_ground_truth(path, sim)
    return path


def _write_fastmri(path: Path, sim: Simulation) -> None:
    """fastMRI layout: undersampled (oversampled-readout) k-space, ``mask``, ``reconstruction_rss`` (the
    ground-truth magnitude on the recon matrix), an ISMRMRD header and the test-set attributes."""
    from mrdserve.models.data.fastmri import write_fastmri

    if sim.trajectory_type != "cartesian" or sim.mask is None or sim.acs is None:
        raise ValueError("the fastMRI format holds 2D Cartesian data only")
    ny, nx = sim.matrix
    oversampling = sim.readout_oversampling
    fov = sim.fov_mm
    header = build_header(
        matrix=(nx * oversampling, ny, 1), recon_matrix=(nx, ny, 1),
        fov_mm=(fov[0] * oversampling, fov[1], fov[2]), recon_fov_mm=fov, n_coils=sim.n_coils,
        acceleration=(max(1, round(sim.acceleration)),), calibration_lines=int(sim.acs.sum()))
    rss = sim.ground_truth.abs()
    attrs = {"acquisition": "synthetic", "max": float(rss.max()), "norm": float(rss.norm()),
             "acceleration": max(1, round(sim.acceleration)), "num_low_frequency": int(sim.acs.sum())}
    write_fastmri(path, sim.kspace, reconstruction_rss=rss, header=header, mask=sim.mask, attrs=attrs)


def simulate_to_file(path: str | Path, trajectory: str = "cartesian", coils: int = 8, acceleration: float = 4,
                     matrix: int | None = None, slices: int = 1, noise: float = 0.01, seed: int = 0,
                     fmt: str = "ismrmrd", center_fraction: float = 0.08,
                     mask_type: str = "equispaced_fraction", readout_oversampling: int = 2,
                     noise_scan: bool = True, partitions: int | None = None,
                     content: str = "textured") -> Simulation:
    """Simulate and write in one call (the ``mrdserve simulate`` command); returns the simulation.

    ``matrix`` is the in-plane size N (default 256 in 2D, 64 for the 3D trajectories); ``partitions`` is the
    number of z partitions of a 3D trajectory (default N, a cube); ``slices`` counts 2D slices or 3D volumes.
    """
    if trajectory not in TRAJECTORIES:
        raise ValueError(f"trajectory must be one of {', '.join(TRAJECTORIES)}, got {trajectory!r}")
    if fmt not in FILE_LAYOUTS:
        raise ValueError(f"format must be one of {', '.join(FILE_LAYOUTS)}, got {fmt!r}")
    if fmt == "fastmri" and trajectory != "cartesian":
        raise ValueError("the fastMRI format holds 2D Cartesian data only; use --format ismrmrd for "
                         f"{trajectory} trajectories")
    is_3d = trajectory in TRAJECTORIES_3D
    if partitions is not None and not is_3d:
        raise ValueError(f"partitions applies to the 3D trajectories ({', '.join(TRAJECTORIES_3D)}) only, "
                         f"not {trajectory!r}")
    n = int(matrix) if matrix is not None else (DEFAULT_MATRIX_3D if is_3d else DEFAULT_MATRIX_2D)
    if content != "textured" and trajectory != "cartesian":
        raise ValueError(f"content {content!r} is simulated for 2D Cartesian data only, not {trajectory!r}")
    if trajectory == "cartesian":
        sim = simulate_cartesian(n, coils, acceleration, center_fraction, mask_type, slices, noise,
                                 readout_oversampling, noise_scan, seed, content=content)
    elif trajectory == "cartesian3d":
        sim = simulate_cartesian_3d((partitions or n, n, n), coils, acceleration, center_fraction, mask_type,
                                    slices, noise, readout_oversampling, noise_scan, seed)
    else:
        shape = (partitions or n, n, n) if is_3d else (n, n)
        sim = simulate_noncartesian(trajectory, shape, coils, acceleration, n_slices=slices,
                                    noise_level=noise, with_noise_scan=noise_scan, seed=seed)
    write_simulation(path, sim, fmt)
    return sim


def add_simulate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the ``mrdserve simulate`` options on ``parser``."""
    parser.add_argument("output", type=Path, help="HDF5 file to write (ISMRMRD or fastMRI layout)")
    parser.add_argument("--trajectory", choices=TRAJECTORIES, default="cartesian",
                        help="k-space trajectory; cartesian3d, stack-of-stars and radial3d simulate a 3D "
                             "volume (default: cartesian)")
    parser.add_argument("--coils", type=int, default=8, help="number of receive coils (default: 8)")
    parser.add_argument("--acceleration", type=float, default=4.0,
                        help="undersampling factor R: ky lines for Cartesian (every kz partition alike for "
                             "cartesian3d), spokes/interleaves otherwise (default: 4)")
    parser.add_argument("--matrix", type=int, default=None,
                        help=f"in-plane recon matrix size N (N x N; default: {DEFAULT_MATRIX_2D} in 2D, "
                             f"{DEFAULT_MATRIX_3D} in 3D)")
    parser.add_argument("--partitions", type=int, default=None,
                        help="z partitions of a 3D trajectory (default: N, an N^3 volume)")
    parser.add_argument("--slices", type=int, default=1,
                        help="number of 2D slices, or of volumes for 3D trajectories (default: 1)")
    parser.add_argument("--noise", type=float, default=0.01,
                        help="noise std per coil-image pixel relative to the peak magnitude (default: 0.01; "
                             "0 for noiseless data)")
    parser.add_argument("--center-fraction", type=float, default=0.08,
                        help="fraction of central ky lines fully sampled (ACS), Cartesian only "
                             "(default: 0.08)")
    parser.add_argument("--mask", choices=tuple(MASK_TYPES), default="equispaced_fraction",
                        help="Cartesian mask type, fastMRI semantics (default: equispaced_fraction)")
    parser.add_argument("--oversampling", type=int, default=2,
                        help="readout oversampling factor, Cartesian only (default: 2)")
    parser.add_argument("--no-noise-scan", action="store_true", help="do not write a noise calibration scan")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--format", choices=FILE_LAYOUTS, default="ismrmrd", help="file layout (default: ismrmrd)")
    return parser


def run_simulate(args: argparse.Namespace) -> int:
    """Run ``mrdserve simulate`` from parsed arguments; prints a one-line summary, returns the exit code."""
    sim = simulate_to_file(args.output, trajectory=args.trajectory, coils=args.coils,
                           acceleration=args.acceleration, matrix=args.matrix, slices=args.slices,
                           noise=args.noise, seed=args.seed, fmt=args.format,
                           center_fraction=args.center_fraction, mask_type=args.mask,
                           readout_oversampling=args.oversampling, noise_scan=not args.no_noise_scan,
                           partitions=getattr(args, "partitions", None))
    what = "volume(s)" if sim.is_3d else "slice(s)"
    print(f"wrote {args.output}: {sim.trajectory_type}, {sim.n_slices} {what}, {sim.n_coils} coils, "
          f"matrix {'x'.join(str(n) for n in sim.matrix)}, acceleration {sim.achieved_acceleration:.2f}")
    return 0
