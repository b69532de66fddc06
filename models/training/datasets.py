"""Training datasets: synthetic, fastMRI and ISMRMRD k-space prepared exactly as the runtime prepares it.

Every dataset yields ``TrainingExample``: ``inputs`` from ``models.data.prepare.prepare_sample`` (batch dim 1,
keys = the network's forward arguments), ``target`` = |ground truth| / ``scale`` as float32 ``[1, *R]`` on the
recon grid R = ``recon_matrix`` (for synthetic data R equals the network's output grid S = ``matrix``; for
fastMRI files R can be smaller, so compare ``batch.crop(output)`` with ``batch.target``), ``scale`` ``[1]``
and ``meta`` (source, file name, index, slice; never header free text or patient data).
``collate_examples`` makes a ``TrainingBatch`` for a ``DataLoader`` (``collate_fn=collate_examples``).
``data_version`` hashes what made the data (generator parameters, or file names and sizes) for provenance.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from mrdserve.models.data.baseline import center_crop
from mrdserve.models.data.fastmri import read_fastmri
from mrdserve.models.data.ismrmrd_io import read_ismrmrd
from mrdserve.models.data.manifest_schema import TASKS
from mrdserve.models.data.prepare import PREPARATION_SPECS, prepare_sample, task_of
from mrdserve.models.data.sample import KSpaceSample, SampleIndex
from mrdserve.models.data.simulate import (
    GROUND_TRUTH_GROUP,
    MASK_TYPES,
    Simulation,
    read_ground_truth,
    simulate_cartesian,
    simulate_noncartesian,
)
from mrdserve.models.physics.classical import rss
from mrdserve.models.physics.fft import ifftnc
from mrdserve.models.physics.masks import MaskFunc

__all__ = [
    "FastMRIDataset",
    "IsmrmrdDataset",
    "SyntheticDataset",
    "TrainingBatch",
    "TrainingExample",
    "collate_examples",
    "data_version",
    "default_preparation",
    "sample_from_simulation",
]

SYNTHETIC_TRAJECTORIES = {
    "cartesian2d-multicoil": ("cartesian",), "cartesian2d-singlecoil": ("cartesian",),
    "noncartesian2d-multicoil": ("radial", "spiral"), "noncartesian2d-singlecoil": ("radial", "spiral"),
    "noncartesian3d": ("stack-of-stars", "radial3d"),
}


@dataclass
class TrainingExample:
    """One prepared example: ``inputs`` (batch dim 1), ``target`` ``[1, *R]``, ``scale`` ``[1]``, ``meta``."""

    inputs: dict[str, torch.Tensor]
    target: torch.Tensor
    scale: torch.Tensor
    recon_matrix: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingBatch:
    """Examples concatenated along dim 0: ``inputs`` ``[B, ...]``, ``target`` ``[B, *R]``, ``scale`` ``[B]``."""

    inputs: dict[str, torch.Tensor]
    target: torch.Tensor
    scale: torch.Tensor
    recon_matrix: tuple[int, ...]
    meta: list[dict[str, Any]]

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainingBatch:
        """The batch with every tensor on ``device``."""
        return TrainingBatch(
            inputs={k: v.to(device, non_blocking=non_blocking) for k, v in self.inputs.items()},
            target=self.target.to(device, non_blocking=non_blocking),
            scale=self.scale.to(device, non_blocking=non_blocking), recon_matrix=self.recon_matrix,
            meta=self.meta)

    def crop(self, output: torch.Tensor) -> torch.Tensor:
        """Network output ``[B, *S]`` (normalised units) cropped to the target's grid ``[B, *R]``."""
        return center_crop(output, self.recon_matrix)


def collate_examples(examples: Sequence[TrainingExample]) -> TrainingBatch:
    """Concatenate examples (same preparation, matrix and recon matrix) into a ``TrainingBatch``."""
    if not examples:
        raise ValueError("collate_examples needs at least one example")
    first = examples[0]
    for example in examples[1:]:
        if list(example.inputs) != list(first.inputs) or example.recon_matrix != first.recon_matrix:
            raise ValueError("cannot batch examples with different inputs or recon matrices: "
                             f"{example.meta} vs {first.meta}")
    try:
        inputs = {key: torch.cat([e.inputs[key] for e in examples]) for key in first.inputs}
        target = torch.cat([e.target for e in examples])
    except RuntimeError as error:
        raise ValueError(f"cannot batch examples with different shapes: {error}") from error
    return TrainingBatch(inputs=inputs, target=target, scale=torch.cat([e.scale for e in examples]),
                         recon_matrix=first.recon_matrix, meta=[e.meta for e in examples])


def default_preparation(task: str) -> str:
    """The preparation that serves ``task``."""
    for name, spec in PREPARATION_SPECS.items():
        if task in spec.tasks:
            return name
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def _example(sample: KSpaceSample, magnitude: torch.Tensor, preparation: str, params: dict[str, Any] | None,
             meta: dict[str, Any]) -> TrainingExample:
    """Prepare ``sample`` and scale its ground-truth magnitude (cropped to the recon matrix) into a target."""
    prepared = prepare_sample(sample, preparation, params)
    target = center_crop(magnitude.abs().to(torch.float32), sample.recon_matrix)
    if tuple(target.shape) != tuple(sample.recon_matrix):
        raise ValueError(f"ground truth {tuple(magnitude.shape)} does not cover the recon matrix "
                         f"{sample.recon_matrix} ({meta})")
    return TrainingExample(inputs=prepared.inputs, target=(target / prepared.scale).unsqueeze(0),
                           scale=prepared.scale, recon_matrix=tuple(sample.recon_matrix), meta=meta)


def sample_from_simulation(sim: Simulation, slice_index: int = 0) -> KSpaceSample:
    """Slice ``slice_index`` of a 2D or non-Cartesian simulation as a ``KSpaceSample`` on its matrix."""
    if sim.mask is not None:
        if sim.is_3d:
            raise ValueError("3D Cartesian simulations have no training task")
        from mrdserve.models.data.acquisitions import remove_readout_oversampling

        kspace = remove_readout_oversampling(sim.kspace[slice_index], sim.matrix[-1])
        return KSpaceSample(kspace=kspace.to(torch.complex64).contiguous(), matrix=sim.matrix,
                            recon_matrix=sim.matrix, trajectory_type="cartesian", mask=sim.mask[:, None],
                            acs_mask=None if sim.acs is None else sim.acs[:, None],
                            index=SampleIndex(slice=slice_index), acceleration=(max(1, round(sim.acceleration)),))
    return KSpaceSample(kspace=sim.kspace[slice_index].contiguous(), matrix=sim.matrix, recon_matrix=sim.matrix,
                        trajectory_type=sim.trajectory_type, trajectory=sim.trajectory,
                        index=SampleIndex(slice=slice_index), acceleration=(max(1, round(sim.acceleration)),))


def _index_seed(seed: int, index: int) -> int:
    """A seed for example ``index`` independent of neighbouring (seed, index) pairs (no seed+1 overlap)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


Choice = int | float | str | Sequence[Any]


class SyntheticDataset(Dataset):
    """Simulated acquisitions generated deterministically per (seed, index) with ``models.data.simulate``.

    Cartesian tasks draw a new phantom, coils, noise and mask per example; non-Cartesian tasks keep one
    trajectory for the whole dataset (its density and Toeplitz kernel are computed once and cached) and draw
    new phantoms, coils and noise. ``matrix`` is N (N x N; N^3 for noncartesian3d) or a tuple; single-coil
    tasks force ``coils`` = 1. ``preparation``/``params`` default to the task's preparation and its defaults.

    Varied data (Cartesian): a list for ``matrix`` (three or more sizes N; two are (y, x)), ``coils`` or
    ``mask_type`` or ``content`` ("textured" anatomy or "piecewise"-constant objects) draws one entry per
    example; a ``[low, high]`` pair for ``acceleration`` or
    ``center_fraction`` draws uniformly and for ``noise_level`` log-uniformly. With ``ismrmrd_path`` each
    example is written as an ISMRMRD file with a noise scan (correlated coil noise) and 2x readout oversampling
    and read back through the serving reader (prewhitening, oversampling removal), so training sees exactly
    what a scanner file gives the runtime.
    """

    def __init__(self, task: str, n_examples: int, matrix: Choice = 64, coils: Choice = 8,
                 acceleration: Choice = 4.0, trajectory: str | None = None,
                 mask_type: Choice = "equispaced_fraction", center_fraction: Choice = 0.08,
                 noise_level: Choice = 0.01, seed: int = 0, preparation: str | None = None,
                 params: dict[str, Any] | None = None, ismrmrd_path: bool = False,
                 content: Choice = "textured") -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        allowed = SYNTHETIC_TRAJECTORIES[task]
        trajectory = trajectory or allowed[0]
        if trajectory not in allowed:
            raise ValueError(f"trajectory {trajectory!r} does not fit task {task!r}; use {', '.join(allowed)}")
        if int(n_examples) != n_examples or n_examples < 1:
            raise ValueError(f"n_examples must be a positive integer, got {n_examples}")
        self.task = task
        self.n_examples = int(n_examples)
        self.trajectory = trajectory
        varied = trajectory == "cartesian"
        dims = 3 if task == "noncartesian3d" else 2
        if isinstance(matrix, int | np.integer):
            self.matrices = [(int(matrix),) * dims]
        elif varied and all(isinstance(n, int | np.integer) for n in matrix) and len(matrix) != dims:
            self.matrices = [(int(n),) * dims for n in matrix]
        elif all(isinstance(n, int | np.integer) for n in matrix) and len(matrix) == dims:
            self.matrices = [tuple(int(n) for n in matrix)]
        else:
            raise ValueError(f"matrix must be N, {dims} sizes, or (Cartesian) a list of sizes N; got {matrix}")
        self.matrix = self.matrices[0]
        self.coil_choices = [1] if task.endswith("singlecoil") else _choices(coils, "coils", varied, positive=True)
        self.coils = self.coil_choices[0]
        self.mask_types = [str(m) for m in _choices(mask_type, "mask_type", varied)]
        for kind in self.mask_types:
            if kind not in MASK_TYPES:
                raise ValueError(f"mask_type must be one of {', '.join(MASK_TYPES)}, got {kind!r}")
        self.mask_type = self.mask_types[0]
        self.contents = [str(c) for c in _choices(content, "content", varied)]
        for kind in self.contents:
            if kind not in ("textured", "piecewise"):
                raise ValueError(f"content must be textured or piecewise, got {kind!r}")
        self.acceleration_range = _range(acceleration, "acceleration", varied)
        self.center_fraction_range = _range(center_fraction, "center_fraction", varied)
        self.noise_range = _range(noise_level, "noise_level", varied)
        if self.noise_range[0] <= 0 < self.noise_range[1]:
            raise ValueError(f"noise_level: a range is drawn log-uniformly and must start above 0, got {noise_level}")
        self.acceleration = self.acceleration_range[0]
        self.center_fraction = self.center_fraction_range[0]
        self.noise_level = self.noise_range[0]
        if ismrmrd_path and not varied:
            raise ValueError("ismrmrd_path is implemented for Cartesian tasks")
        self.ismrmrd_path = bool(ismrmrd_path)
        self.seed = int(seed)
        self.preparation = preparation or default_preparation(task)
        if self.preparation not in PREPARATION_SPECS or task not in PREPARATION_SPECS[self.preparation].tasks:
            raise ValueError(f"preparation {self.preparation!r} does not serve task {task!r}")
        self.params = PREPARATION_SPECS[self.preparation].resolve(params)

    def __len__(self) -> int:
        return self.n_examples

    def draw(self, index: int) -> dict[str, Any]:
        """The simulation parameters of example ``index`` (a pure function of (seed, index))."""
        if not 0 <= index < self.n_examples:
            raise IndexError(f"index {index} out of range for {self.n_examples} examples")
        seed = _index_seed(self.seed, index)
        rng = np.random.default_rng(seed)
        low, high = self.noise_range
        noise = float(np.exp(rng.uniform(np.log(low), np.log(high)))) if low > 0 and high > low else low
        return {"matrix": self.matrices[int(rng.integers(len(self.matrices)))],
                "coils": int(self.coil_choices[int(rng.integers(len(self.coil_choices)))]),
                "mask_type": self.mask_types[int(rng.integers(len(self.mask_types)))],
                "acceleration": float(rng.uniform(*self.acceleration_range)),
                "center_fraction": float(rng.uniform(*self.center_fraction_range)),
                "noise_level": noise, "seed": seed,
                "content": self.contents[int(rng.integers(len(self.contents)))] if len(self.contents) > 1
                else self.contents[0]}

    def simulate(self, index: int) -> Simulation:
        """The simulation behind example ``index`` (one slice or volume)."""
        drawn = self.draw(index)
        if self.trajectory == "cartesian":
            return simulate_cartesian(drawn["matrix"], drawn["coils"], drawn["acceleration"],
                                      drawn["center_fraction"], drawn["mask_type"], n_slices=1,
                                      noise_level=drawn["noise_level"],
                                      readout_oversampling=2 if self.ismrmrd_path else 1,
                                      with_noise_scan=self.ismrmrd_path, seed=drawn["seed"],
                                      noise_correlation=0.3 if self.ismrmrd_path else 0.2,
                                      content=drawn["content"])
        return simulate_noncartesian(self.trajectory, drawn["matrix"], drawn["coils"], drawn["acceleration"],
                                     noise_level=drawn["noise_level"], with_noise_scan=False, seed=drawn["seed"])

    def _sample_and_target(self, sim: Simulation) -> tuple[KSpaceSample, torch.Tensor]:
        """The sample as the runtime sees it and its ground-truth magnitude in the same (prewhitened) units:
        the RSS of the noiseless coil images after the reader's whitening matrix."""
        if not self.ismrmrd_path:
            return sample_from_simulation(sim, 0), sim.ground_truth[0].abs()
        from mrdserve.models.data.acquisitions import AcquisitionAssembler
        from mrdserve.models.data.ismrmrd_io import read_acquisitions
        from mrdserve.models.data.simulate import write_simulation

        with tempfile.TemporaryDirectory(prefix="mrdserve-train-") as tmp:
            path = Path(tmp) / "example.h5"
            write_simulation(path, sim)
            xml, acquisitions = read_acquisitions(path)
        assembler = AcquisitionAssembler(xml)
        samples = [s for acq in acquisitions for s in assembler.add(acq)] + assembler.finish()
        coil_images = sim.smaps.to(torch.complex128) * sim.ground_truth[0].to(torch.complex128)
        whitening = assembler.last_whitening
        if whitening is not None:
            coil_images = torch.einsum("dc,c...->d...", whitening.to(torch.complex128), coil_images)
        return samples[0], rss(coil_images, dim=0).to(torch.float32)

    def sample(self, index: int) -> KSpaceSample:
        """The undersampled k-space sample behind example ``index`` (what baselines reconstruct)."""
        return self._sample_and_target(self.simulate(index))[0]

    def target(self, index: int) -> torch.Tensor:
        """The ground-truth magnitude of example ``index`` in the units of ``sample(index)``."""
        return self._sample_and_target(self.simulate(index))[1]

    def __getitem__(self, index: int) -> TrainingExample:
        sample, magnitude = self._sample_and_target(self.simulate(index))
        meta = {"source": "synthetic", "task": self.task, "index": int(index), "slice": 0}
        return _example(sample, magnitude, self.preparation, self.params, meta)

    def describe(self) -> dict[str, Any]:
        """The parameters that determine every example (hashed by ``data_version``)."""
        described = {"kind": "synthetic", "task": self.task, "n_examples": self.n_examples,
                     "matrix": list(self.matrix), "coils": self.coils, "acceleration": self.acceleration,
                     "trajectory": self.trajectory, "mask_type": self.mask_type,
                     "center_fraction": self.center_fraction, "noise_level": self.noise_level, "seed": self.seed,
                     "preparation": self.preparation, "params": self.params}
        if len(self.contents) > 1 or self.contents != ["textured"]:
            described["contents"] = self.contents
        if (len(self.matrices) > 1 or len(self.coil_choices) > 1 or len(self.mask_types) > 1 or self.ismrmrd_path
                or any(lo != hi for lo, hi in (self.acceleration_range, self.center_fraction_range,
                                               self.noise_range))):
            described.update(matrices=[list(m) for m in self.matrices], coil_choices=self.coil_choices,
                             mask_types=self.mask_types, acceleration_range=list(self.acceleration_range),
                             center_fraction_range=list(self.center_fraction_range),
                             noise_range=list(self.noise_range), ismrmrd_path=self.ismrmrd_path)
        return described


def _choices(value: Choice, name: str, varied: bool, positive: bool = False) -> list[Any]:
    """A scalar as a one-entry list, or (varied data only) a non-empty list of choices."""
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values or (len(values) > 1 and not varied):
        raise ValueError(f"{name}: a list of choices is supported for Cartesian tasks only, got {value!r}")
    if positive and any(int(v) != v or v < 1 for v in values):
        raise ValueError(f"{name} must be positive integers, got {value!r}")
    return [int(v) for v in values] if positive else values


def _range(value: Choice, name: str, varied: bool) -> tuple[float, float]:
    """A scalar as (v, v), or (varied data only) a ``[low, high]`` pair with low <= high."""
    if isinstance(value, list | tuple):
        if len(value) != 2 or not varied or float(value[0]) > float(value[1]):
            raise ValueError(f"{name} must be a number or (Cartesian) a [low, high] pair, got {value!r}")
        return float(value[0]), float(value[1])
    return float(value), float(value)


def _h5_files(directory: str | Path, what: str) -> list[Path]:
    path = Path(directory)
    if not path.is_dir():
        raise ValueError(f"{what} directory not found: {path}")
    files = sorted(p for p in path.iterdir() if p.suffix in (".h5", ".hdf5") and p.is_file())
    if not files:
        raise ValueError(f"{what} directory {path} holds no .h5 files")
    return files


def _file_listing(files: Sequence[Path]) -> list[list[Any]]:
    return [[p.name, p.stat().st_size] for p in files]


def _undersample(sample: KSpaceSample, mask_func: MaskFunc, seed: int) -> KSpaceSample:
    """Fully sampled Cartesian ``sample`` with a drawn ky mask applied (ACS lines from the mask function)."""
    drawn = mask_func(int(sample.kspace.shape[-2]), seed=seed)
    mask = drawn.kspace_mask()
    return KSpaceSample(kspace=sample.kspace * mask, matrix=sample.matrix, recon_matrix=sample.recon_matrix,
                        trajectory_type="cartesian", mask=mask, acs_mask=drawn.acs_kspace_mask(),
                        index=sample.index, geometry=sample.geometry,
                        acceleration=(max(1, round(drawn.achieved_acceleration)),))


def _fully_sampled(sample: KSpaceSample) -> bool:
    return sample.mask is None or bool(sample.mask.all())


class FastMRIDataset(Dataset):
    """Slices of fully sampled fastMRI files, undersampled retrospectively with ``mask_func``.

    The target is the file's ``reconstruction_rss`` slice. Masks are drawn per (seed, file, slice), so an
    epoch is reproducible; pass a new ``seed`` per epoch for fresh masks.
    """

    def __init__(self, directory: str | Path, mask_func: MaskFunc, preparation: str = "cartesian-sense",
                 params: dict[str, Any] | None = None, seed: int = 0) -> None:
        if not isinstance(mask_func, MaskFunc):
            raise TypeError(f"mask_func must be a models.physics.masks.MaskFunc, got {type(mask_func).__name__}")
        self.files = _h5_files(directory, "fastMRI")
        self.mask_func = mask_func
        self.preparation = preparation
        if preparation not in PREPARATION_SPECS:
            raise ValueError(f"unknown preparation {preparation!r}; known: {', '.join(PREPARATION_SPECS)}")
        self.params = PREPARATION_SPECS[preparation].resolve(params)
        self.seed = int(seed)
        self.index: list[tuple[int, int]] = []
        for number, path in enumerate(self.files):
            try:
                with h5py.File(path, "r") as f:
                    if "kspace" not in f:
                        raise ValueError(f"{path} has no 'kspace' dataset")
                    if "reconstruction_rss" not in f:
                        raise ValueError(f"{path} has no 'reconstruction_rss' target (test-set files cannot "
                                         "be used for training)")
                    n_slices = int(f["kspace"].shape[0])
            except OSError as error:
                raise ValueError(f"{path} is not a readable HDF5 file: {error}") from error
            self.index.extend((number, s) for s in range(n_slices))
        self._cached: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def _volume(self, number: int) -> Any:
        if self._cached is None or self._cached[0] != number:
            self._cached = (number, read_fastmri(self.files[number]))
        return self._cached[1]

    def sample(self, index: int) -> KSpaceSample:
        """The retrospectively undersampled k-space sample behind example ``index``."""
        number, slice_index = self.index[index]
        sample = self._volume(number).samples[slice_index]
        if not _fully_sampled(sample):
            raise ValueError(f"{self.files[number].name} slice {slice_index} is already undersampled; "
                             "FastMRIDataset needs fully sampled k-space")
        return _undersample(sample, self.mask_func, _index_seed(self.seed, index))

    def __getitem__(self, index: int) -> TrainingExample:
        number, slice_index = self.index[index]
        sample = self.sample(index)
        meta = {"source": "fastmri", "file": self.files[number].name, "index": int(index), "slice": slice_index}
        return _example(sample, self._volume(number).reference[slice_index], self.preparation, self.params, meta)

    def describe(self) -> dict[str, Any]:
        mask = self.mask_func
        return {"kind": "fastmri", "files": _file_listing(self.files), "mask": type(mask).__name__,
                "center_fractions": mask.center_fractions, "accelerations": mask.accelerations,
                "seed": self.seed, "preparation": self.preparation, "params": self.params}


class IsmrmrdDataset(Dataset):
    """Samples of ISMRMRD files: simulated files (target ``/mrdserve/ground_truth``) as acquired, or fully
    sampled Cartesian files undersampled retrospectively with ``mask_func`` (target: RSS of the full data).

    With ``mask_func`` given, fully sampled Cartesian samples of simulated files are undersampled too.
    ``preparation`` defaults per sample to the one serving its task.
    """

    def __init__(self, directory: str | Path, mask_func: MaskFunc | None = None, preparation: str | None = None,
                 params: dict[str, Any] | None = None, seed: int = 0) -> None:
        if mask_func is not None and not isinstance(mask_func, MaskFunc):
            raise TypeError(f"mask_func must be a models.physics.masks.MaskFunc, got {type(mask_func).__name__}")
        if preparation is not None and preparation not in PREPARATION_SPECS:
            raise ValueError(f"unknown preparation {preparation!r}; known: {', '.join(PREPARATION_SPECS)}")
        self.files = _h5_files(directory, "ISMRMRD")
        self.mask_func = mask_func
        self.preparation = preparation
        self.params = params
        self.seed = int(seed)
        self.index: list[tuple[int, int]] = []
        for number, path in enumerate(self.files):
            _, samples = read_ismrmrd(path)
            if not samples:
                raise ValueError(f"{path} holds no imaging acquisitions")
            self.index.extend((number, s) for s in range(len(samples)))
        self._cached: tuple[int, list[KSpaceSample], torch.Tensor | None] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def _file(self, number: int) -> tuple[list[KSpaceSample], torch.Tensor | None]:
        if self._cached is None or self._cached[0] != number:
            path = self.files[number]
            _, samples = read_ismrmrd(path)
            with h5py.File(path, "r") as f:
                has_truth = GROUND_TRUTH_GROUP in f and "ground_truth" in f[GROUND_TRUTH_GROUP]
            self._cached = (number, samples, read_ground_truth(path) if has_truth else None)
        return self._cached[1], self._cached[2]

    def _sample_and_truth(self, index: int) -> tuple[KSpaceSample, torch.Tensor]:
        number, position = self.index[index]
        samples, truth = self._file(number)
        sample = samples[position]
        name = self.files[number].name
        if truth is not None:
            magnitude = truth[int(sample.index.slice)].abs()
        elif sample.is_cartesian and _fully_sampled(sample):
            magnitude = rss(ifftnc(sample.kspace.unsqueeze(0), sample.n_spatial), dim=1)[0]
        else:
            raise ValueError(f"{name} sample {position} has no ground truth: it is not a simulated file "
                             "(/mrdserve/ground_truth) nor fully sampled Cartesian data")
        if sample.is_cartesian and _fully_sampled(sample):
            if self.mask_func is None:
                if truth is None:
                    raise ValueError(f"{name} is fully sampled: give a mask_func to undersample it")
            else:
                sample = _undersample(sample, self.mask_func, _index_seed(self.seed, index))
        return sample, magnitude

    def sample(self, index: int) -> KSpaceSample:
        """The (retrospectively undersampled, where asked) k-space sample behind example ``index``."""
        return self._sample_and_truth(index)[0]

    def __getitem__(self, index: int) -> TrainingExample:
        number, _ = self.index[index]
        sample, magnitude = self._sample_and_truth(index)
        meta = {"source": "ismrmrd", "file": self.files[number].name, "index": int(index),
                "slice": int(sample.index.slice)}
        preparation = self.preparation or default_preparation(task_of(sample))
        return _example(sample, magnitude, preparation, self.params, meta)

    def describe(self) -> dict[str, Any]:
        mask = self.mask_func
        return {"kind": "ismrmrd", "files": _file_listing(self.files),
                "mask": None if mask is None else type(mask).__name__,
                "center_fractions": None if mask is None else mask.center_fractions,
                "accelerations": None if mask is None else mask.accelerations, "seed": self.seed,
                "preparation": self.preparation, "params": self.params}


def data_version(dataset: Dataset) -> str:
    """A short hash of what determines ``dataset``'s examples (generator parameters, or file names + sizes)."""
    describe = getattr(dataset, "describe", None)
    if describe is None:
        raise TypeError(f"data_version needs a dataset with describe(), got {type(dataset).__name__}")
    payload = json.dumps(describe(), sort_keys=True, default=_jsonable)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
