"""One preparation per task, by name, for training and serving alike: ``KSpaceSample`` -> network inputs.

The trainer and the runtime both call ``prepare_sample``, and an artifact's manifest names the preparation
and its parameters, so a network never sees different inputs in production than in training. The tensor
work is done by ``models.physics.prepare_cartesian`` and ``models.physics.prepare_noncartesian``; this module
checks that a sample fits the preparation, picks its parameters and lays the tensors out for a batch:

- "cartesian-sense" (XPDNet, PDNet): ``inputs = {"kspace" [1, C, ky, kx, 2], "mask" [1, 1, ky, kx] float,
  "smaps" [1, C, ky, kx, 2]}``; params ``sensitivities`` "espirit" (default) | "acs" (estimated from the
  sample's ACS lines; single coil gets maps of ones) and ``with_smaps`` (default True; False drops "smaps"
  for single-coil PDNet).
- "noncartesian-toeplitz" (NC-PDNet): ``inputs = {"adjoint" [1, *S, 2] (single coil) or per coil
  [1, C, *S, 2], "kernel" [1, *2S, 2] (per-sample layout), "smaps" [1, C, *S, 2] (multicoil only)}``;
  params ``density`` "pipe-menon" (default) | "given" (the acquisition's own weights, normalised) and
  ``sensitivities`` "estimate" (default, from the central samples).

Inputs are real float32 tensors with batch dimension 1 whose keys are the network's forward argument names,
so ``network(**collate(prepared))`` runs a batch. Networks output magnitudes ``[B, *S]`` (S = ``matrix``) in
normalised units: ``output_to_image`` multiplies by ``scale`` and crops to ``recon_matrix``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mrdserve.models.data.baseline import MIN_CALIBRATION_LINES, calibration_lines, center_crop
from mrdserve.models.data.manifest_schema import TASKS
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.physics.density import normalise_density, pipe_menon_density
from mrdserve.models.physics.nufft_cache import trajectory_hash
from mrdserve.models.physics.prepare_cartesian import prepare_cartesian
from mrdserve.models.physics.prepare_noncartesian import prepare_noncartesian, to_network_inputs


@dataclass(frozen=True)
class Preparation:
    """A named preparation: the tasks it serves and its parameters (allowed values, defaults)."""

    name: str
    tasks: tuple[str, ...]
    choices: dict[str, tuple[Any, ...]]
    defaults: dict[str, Any]

    def resolve(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """``params`` completed with the defaults; unknown keys and values not allowed raise ValueError."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"preparation {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(self.defaults))}")
        resolved = {**self.defaults, **params}
        for key, allowed in self.choices.items():
            if resolved[key] not in allowed:
                raise ValueError(f"preparation {self.name!r} parameter {key!r} must be one of "
                                 f"{', '.join(map(repr, allowed))}, got {resolved[key]!r}")
        return resolved


PREPARATION_SPECS: dict[str, Preparation] = {  # keyed by manifest_schema.PREPARATIONS (tests/data/test_prepare.py)
    "cartesian-sense": Preparation(
        name="cartesian-sense", tasks=("cartesian2d-multicoil", "cartesian2d-singlecoil"),
        choices={"sensitivities": ("espirit", "acs"), "with_smaps": (True, False)},
        defaults={"sensitivities": "espirit", "with_smaps": True}),
    "noncartesian-toeplitz": Preparation(
        name="noncartesian-toeplitz",
        tasks=("noncartesian2d-multicoil", "noncartesian2d-singlecoil", "noncartesian3d"),
        choices={"density": ("pipe-menon", "given"), "sensitivities": ("estimate",)},
        defaults={"density": "pipe-menon", "sensitivities": "estimate"}),
}


@dataclass
class PreparedSample:
    """Network inputs of one sample (batch dim 1, forward-argument order), its ``scale`` ``[1]`` and grids."""

    inputs: dict[str, torch.Tensor]
    scale: torch.Tensor
    matrix: tuple[int, ...]
    recon_matrix: tuple[int, ...]
    task: str = ""
    preparation: str = ""
    params: dict[str, Any] = field(default_factory=dict)


def task_of(sample: KSpaceSample) -> str:
    """The task a sample belongs to (one of ``TASKS``); ValueError for data no task covers (3D Cartesian)."""
    if sample.is_cartesian:
        if sample.n_spatial != 2:
            raise ValueError(f"no task for {sample.n_spatial}D Cartesian data (matrix {sample.matrix}); "
                             f"tasks: {', '.join(TASKS)}")
        return "cartesian2d-multicoil" if sample.n_coils > 1 else "cartesian2d-singlecoil"
    if sample.n_spatial == 3:
        return "noncartesian3d"
    if sample.n_spatial != 2:
        raise ValueError(f"no task for {sample.n_spatial}D non-Cartesian data (matrix {sample.matrix})")
    return "noncartesian2d-multicoil" if sample.n_coils > 1 else "noncartesian2d-singlecoil"


def prepare_sample(sample: KSpaceSample, preparation: str, params: dict[str, Any] | None = None,
                   device: torch.device | str = "cpu") -> PreparedSample:
    """Prepare ``sample`` with the named preparation (see the module docstring) on ``device``."""
    if preparation not in PREPARATION_SPECS:
        raise ValueError(f"unknown preparation {preparation!r}; known: {', '.join(PREPARATION_SPECS)}")
    spec = PREPARATION_SPECS[preparation]
    resolved = spec.resolve(params)
    task = task_of(sample)
    if task not in spec.tasks:
        raise ValueError(f"preparation {preparation!r} serves {', '.join(spec.tasks)}; this sample is {task} "
                         f"({sample.trajectory_type}, {sample.n_coils} coil(s), matrix {sample.matrix})")
    device = torch.device(device)
    if preparation == "cartesian-sense":
        inputs, scale = _cartesian_sense(sample, resolved, device)
    else:
        inputs, scale = _noncartesian_toeplitz(sample, resolved, device)
    return PreparedSample(inputs=inputs, scale=scale.reshape(1).to(torch.float32), matrix=tuple(sample.matrix),
                          recon_matrix=tuple(sample.recon_matrix), task=task, preparation=preparation,
                          params=resolved)


def _cartesian_sense(sample: KSpaceSample, params: dict[str, Any],
                     device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    kspace = sample.kspace
    if kspace.dim() != 3 or tuple(kspace.shape[1:]) != tuple(sample.matrix):
        raise ValueError(f"sample kspace must be [C, ky, kx] on its matrix {sample.matrix}, got "
                         f"{tuple(kspace.shape)}")
    mask = sample.mask if sample.mask is not None else (kspace.abs().sum(0, keepdim=True) > 0)
    lines = calibration_lines(sample)  # ACS flags, else the fully sampled centre (all of k-space at R = 1)
    if sample.n_coils > 1 and lines is None:
        raise ValueError(f"cartesian-sense needs calibration lines to estimate sensitivities "
                         f"({params['sensitivities']!r}) for {sample.n_coils}-coil data: flag ACS lines or acquire "
                         f"at least {MIN_CALIBRATION_LINES} contiguous lines at the centre of k-space")
    acs = None if lines is None else lines[:, None]
    prepared = prepare_cartesian(kspace.to(device), mask.to(device), None if acs is None else acs.to(device),
                                 sensitivities=params["sensitivities"], device=device)
    tensors = prepared.to_network_inputs(with_smaps=bool(params["with_smaps"]))
    names = ("kspace", "mask", "smaps")
    return {name: t.to(torch.float32) for name, t in zip(names, tensors, strict=False)}, prepared.scale


def _noncartesian_toeplitz(sample: KSpaceSample, params: dict[str, Any],
                           device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    if sample.trajectory is None:
        raise ValueError("noncartesian-toeplitz needs a trajectory; this sample is Cartesian")
    trajectory = sample.trajectory.to(device=device, dtype=torch.float32)
    # the trajectory is hashed once per sample; a float32 copy of another dtype has bytes (and a key) of its own
    key = sample.trajectory_key if sample.trajectory.dtype == torch.float32 else trajectory_hash(trajectory)
    if params["density"] == "given":
        if sample.density is None:
            raise ValueError("preparation parameter density='given' but the sample carries no density weights")
        density = normalise_density(sample.density.to(device), trajectory, sample.matrix, trajectory_key=key)
    else:
        density = pipe_menon_density(trajectory, sample.matrix, device=device, trajectory_key=key)
    smaps = params["sensitivities"] if sample.n_coils > 1 else None
    prepared = prepare_noncartesian(sample.kspace.to(device), trajectory, sample.matrix, density=density,
                                    smaps=smaps, trajectory_key=key)
    tensors = to_network_inputs(prepared, kernel_per_sample=True)
    names = ("adjoint", "kernel", "smaps")
    return {name: t.to(torch.float32) for name, t in zip(names, tensors, strict=False)}, prepared.scale


def collate(prepared: Sequence[PreparedSample]) -> dict[str, torch.Tensor]:
    """Concatenate the inputs of prepared samples along dim 0 (same task, preparation and matrix)."""
    if not prepared:
        raise ValueError("collate needs at least one prepared sample")
    keys = list(prepared[0].inputs)
    for item in prepared[1:]:
        if list(item.inputs) != keys or item.matrix != prepared[0].matrix:
            raise ValueError(f"cannot batch samples with different inputs or matrices: {keys} {prepared[0].matrix}"
                             f" vs {list(item.inputs)} {item.matrix}")
    try:
        return {key: torch.cat([item.inputs[key] for item in prepared]) for key in keys}
    except RuntimeError as error:
        raise ValueError(f"cannot batch samples with different shapes (coils?): {error}") from error


def output_to_image(output: torch.Tensor, scale: torch.Tensor, recon_matrix: Sequence[int]) -> torch.Tensor:
    """Network output ``[B, *S]`` in data units (times ``scale [B]``), cropped to ``recon_matrix``."""
    scale = torch.as_tensor(scale, device=output.device, dtype=output.dtype).reshape(-1)
    if scale.numel() not in (1, output.shape[0]):
        raise ValueError(f"scale has {scale.numel()} values for a batch of {output.shape[0]}")
    restored = output * scale.reshape(-1, *([1] * (output.dim() - 1)))
    return center_crop(restored, tuple(int(n) for n in recon_matrix))
