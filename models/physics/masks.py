"""fastMRI-compatible Cartesian undersampling masks along ky (random, equispaced, equispaced-fraction).

Each mask function draws one (centre fraction, acceleration) pair per call, keeps ``round(n * cf)`` central
lines as the fully sampled ACS block (centred on the zero frequency at ``n // 2``, as fastMRI does), and
samples the remaining lines by its rule. Results are 1D bool arrays over ky; ``as_kspace_mask`` turns them
into a ``[ky, 1]`` tensor that broadcasts against k-space ``[B, C, (kz,) ky, kx]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

SeedLike = int | np.random.Generator | None
# Inside CartesianMask the method ``torch`` shadows the module, so its methods are annotated with these names.
DeviceLike = torch.device | str


@dataclass(frozen=True)
class CartesianMask:
    """One drawn mask: sampled lines, the ACS lines among them, and the parameters that made it."""

    mask: np.ndarray  # bool (n,), True where a ky line is sampled
    acs: np.ndarray  # bool (n,), True on the fully sampled centre block (subset of mask)
    acceleration: float  # requested acceleration R
    center_fraction: float  # requested centre fraction

    @property
    def num_lines(self) -> int:
        return int(self.mask.size)

    @property
    def num_acs(self) -> int:
        return int(self.acs.sum())

    @property
    def achieved_acceleration(self) -> float:
        """Total lines over sampled lines (ACS included)."""
        return self.num_lines / float(self.mask.sum())

    def torch(self, device: DeviceLike = "cpu") -> Tensor:
        """The mask as a bool tensor of shape (n,)."""
        return torch.from_numpy(self.mask.copy()).to(device)

    def kspace_mask(self, device: DeviceLike = "cpu") -> Tensor:
        """The mask as a bool ``[ky, 1]`` tensor that broadcasts against k-space."""
        return as_kspace_mask(self.mask, device)

    def acs_kspace_mask(self, device: DeviceLike = "cpu") -> Tensor:
        """The ACS lines as a bool ``[ky, 1]`` tensor (the ``acs_mask`` of sensitivity estimation)."""
        return as_kspace_mask(self.acs, device)


def as_kspace_mask(lines: np.ndarray | torch.Tensor,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """1D ky mask (n,) -> ``[ky, 1]`` tensor broadcastable to k-space ``[..., ky, kx]``."""
    tensor = torch.from_numpy(np.ascontiguousarray(lines)) if isinstance(lines, np.ndarray) else lines
    if tensor.dim() != 1:
        raise ValueError(f"mask must be 1D over ky, got shape {tuple(tensor.shape)}")
    if device is not None:
        tensor = tensor.to(device)
    return tensor.reshape(-1, 1)


def acs_lines(n: int, num_low: int) -> np.ndarray:
    """Bool (n,) with ``num_low`` contiguous lines centred on ``n // 2`` (fastMRI placement)."""
    acs = np.zeros(n, dtype=bool)
    start = (n - num_low + 1) // 2
    acs[start : start + num_low] = True
    return acs


class MaskFunc:
    """Base of the mask functions: validated (cf, R) pairs, a seeded generator, and the ACS block."""

    integer_acceleration = False

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float],
                 seed: SeedLike = None) -> None:
        center_fractions = [float(c) for c in _as_list(center_fractions, "center_fractions")]
        accelerations = [float(a) for a in _as_list(accelerations, "accelerations")]
        if len(center_fractions) != len(accelerations):
            raise ValueError(
                f"center_fractions ({len(center_fractions)} values) and accelerations "
                f"({len(accelerations)} values) must have the same length")
        for cf in center_fractions:
            if not 0.0 < cf < 1.0:
                raise ValueError(f"center_fractions must lie in (0, 1), got {cf}")
        for r in accelerations:
            if not r >= 1.0:
                raise ValueError(f"accelerations must be >= 1, got {r}")
            if self.integer_acceleration and r != round(r):
                raise ValueError(f"accelerations must be integers for {type(self).__name__}, got {r}")
        self.center_fractions = center_fractions
        self.accelerations = accelerations
        self.rng = np.random.default_rng(seed)

    def __call__(self, num_lines: int, seed: SeedLike = None) -> CartesianMask:
        """Draw a mask over ``num_lines`` ky lines; ``seed`` (int or Generator) overrides the own rng."""
        if isinstance(num_lines, bool) or not isinstance(num_lines, int | np.integer):
            raise TypeError(f"num_lines must be an int, got {type(num_lines).__name__}")
        if num_lines < 2:
            raise ValueError(f"num_lines must be >= 2, got {num_lines}")
        rng = self.rng if seed is None else np.random.default_rng(seed)
        choice = int(rng.integers(len(self.accelerations)))
        cf, accel = self.center_fractions[choice], self.accelerations[choice]
        num_low = round(num_lines * cf)
        if num_low < 1:
            raise ValueError(f"center_fraction {cf} of {num_lines} lines rounds to no ACS line")
        acs = acs_lines(num_lines, num_low)
        outer = self._outer_lines(num_lines, num_low, accel, rng)
        return CartesianMask(mask=outer | acs, acs=acs, acceleration=accel, center_fraction=cf)

    def _outer_lines(self, n: int, num_low: int, accel: float, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class RandomMask(MaskFunc):
    """fastMRI RandomMaskFunc: each non-ACS line is kept with probability (n/R - n_acs)/(n - n_acs).

    The expected number of sampled lines is n / R, so the expected acceleration is R.
    """

    def _outer_lines(self, n: int, num_low: int, accel: float, rng: np.random.Generator) -> np.ndarray:
        budget = n / accel - num_low
        _check_budget(budget, n, num_low, accel)
        prob = budget / (n - num_low) if n > num_low else 0.0
        return rng.uniform(size=n) < prob


class EquispacedMask(MaskFunc):
    """fastMRI EquispacedMaskFunc: ACS block plus every R-th line from a random offset in [0, R).

    Strictly periodic outside the ACS; the achieved acceleration is a little below R because of the ACS.
    """

    integer_acceleration = True

    def _outer_lines(self, n: int, num_low: int, accel: float, rng: np.random.Generator) -> np.ndarray:
        stride = round(accel)
        offset = int(rng.integers(0, stride))
        lines = np.zeros(n, dtype=bool)
        lines[offset::stride] = True
        return lines


class EquispacedFractionMask(MaskFunc):
    """fastMRI EquispacedMaskFractionFunc: spacing R (n - n_acs) / (n - R n_acs), about n / R lines in all."""

    def _outer_lines(self, n: int, num_low: int, accel: float, rng: np.random.Generator) -> np.ndarray:
        budget = n / accel - num_low
        _check_budget(budget, n, num_low, accel)
        lines = np.zeros(n, dtype=bool)
        if budget <= 0:
            return lines
        spacing = accel * (n - num_low) / (n - accel * num_low)
        offset = int(rng.integers(0, round(accel)))
        positions = np.around(np.arange(offset, n - 1, spacing)).astype(np.int64)
        lines[positions[positions < n]] = True
        return lines


def _check_budget(budget: float, n: int, num_low: int, accel: float) -> None:
    if budget < -1e-9:
        raise ValueError(
            f"acceleration {accel} is unreachable: the ACS block alone ({num_low} of {n} lines) exceeds "
            f"n / R = {n / accel:.1f} lines; lower center_fractions or accelerations")


def _as_list(values: Sequence[float] | float, name: str) -> list[float]:
    if isinstance(values, int | float):
        return [values]
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values
