"""Convert non-Cartesian trajectories from the units producers use to radians/sample in [-pi, pi).

Producers disagree: Gadgetron's non-Cartesian gadgets use cycles/pixel in [-0.5, 0.5], BART uses 1/FOV units
in [-N/2, N/2] (N = matrix size along that axis), others store radians/sample in [-pi, pi]. The rule, first
match wins:

1. an explicit ``units`` argument: ``"radians"``, ``"cycles"`` or ``"fov"``;
2. a header ``userParameterString`` whose name contains "unit" (in ``encoding.trajectoryDescription`` or
   the top-level ``userParameters``), or a trajectoryDescription comment naming "radians/sample",
   "cycles/pixel" or "1/fov";
3. the value range: max |k| <= 0.5 -> cycles, <= pi -> radians, <= N/2 per axis -> fov units; anything
   larger is a ValueError naming the max value and the accepted ranges.

Range detection cannot tell radians from cycles for a trajectory that only covers |k| <= 0.5 rad (the very
centre of k-space); name the units in the header or pass ``units`` for such data. The result is wrapped
into [-pi, pi) (k = pi and k = -pi are the same sample on the DFT grid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

UNITS = ("radians", "cycles", "fov")
_ALIASES = {
    "radians": "radians", "radian": "radians", "rad": "radians", "radians/sample": "radians",
    "rad/sample": "radians",
    "cycles": "cycles", "cycles/pixel": "cycles", "cycles/sample": "cycles", "cycle": "cycles",
    "fov": "fov", "1/fov": "fov", "fov units": "fov", "bart": "fov",
}
_TOLERANCE = 1e-3


def normalise_units(units: str) -> str:
    """Map a units name (alias, any case) to one of ``UNITS``; ValueError for an unknown name."""
    key = units.strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"trajectory units not recognised (a name of {len(units)} characters); use one of "
                         f"{', '.join(UNITS)}")
    return _ALIASES[key]


def units_from_header(header: Any) -> str | None:
    """Units named in an ISMRMRD header (xsd object), or None when it names none."""
    if header is None:
        return None
    parameter_lists = []
    for encoding in getattr(header, "encoding", None) or []:
        description = getattr(encoding, "trajectoryDescription", None)
        if description is not None:
            parameter_lists.append(description.userParameterString)
            comment = (description.comment or "").lower()
            for alias in ("radians/sample", "rad/sample", "cycles/pixel", "cycles/sample", "1/fov"):
                if alias in comment:
                    return _ALIASES[alias]
    user_parameters = getattr(header, "userParameters", None)
    if user_parameters is not None:
        parameter_lists.append(user_parameters.userParameterString)
    for parameters in parameter_lists:
        for parameter in parameters:
            if "unit" in parameter.name.lower():
                return normalise_units(parameter.value)
    return None


def detect_units(traj: torch.Tensor, matrix: Sequence[int]) -> str:
    """Units guessed from the value range of ``traj`` ``(d, K)`` (see the module docstring)."""
    peak = float(traj.abs().max()) if traj.numel() else 0.0
    if peak <= 0.5 * (1 + _TOLERANCE):
        return "cycles"
    if peak <= math.pi * (1 + _TOLERANCE):
        return "radians"
    per_axis = traj.abs().amax(dim=1)
    if all(float(per_axis[i]) <= matrix[i] / 2 * (1 + _TOLERANCE) for i in range(traj.shape[0])):
        return "fov"
    raise ValueError(
        f"trajectory max |k| = {peak:.4g} fits no known units: cycles/pixel need <= 0.5, radians/sample "
        f"<= pi, 1/FOV units <= N/2 per axis (matrix {tuple(matrix)}); name the units explicitly")


def wrap_radians(traj: torch.Tensor) -> torch.Tensor:
    """Wrap angles into [-pi, pi)."""
    return torch.remainder(traj + math.pi, 2 * math.pi) - math.pi


def to_radians(traj: torch.Tensor, matrix: Sequence[int], units: str | None = None,
               header: Any = None) -> torch.Tensor:
    """Trajectory ``(d, K)`` in radians/sample in [-pi, pi); ``matrix``: grid size per row of ``traj``."""
    if traj.dim() != 2:
        raise ValueError(f"trajectory must be (d, K), got shape {tuple(traj.shape)}")
    if len(matrix) != traj.shape[0]:
        raise ValueError(f"matrix {tuple(matrix)} must give one size per trajectory row ({traj.shape[0]})")
    if not torch.is_floating_point(traj):
        raise TypeError(f"trajectory must be a real floating-point tensor, got {traj.dtype}")
    if not bool(torch.isfinite(traj).all()):
        raise ValueError("trajectory contains NaN or infinite values")
    chosen = normalise_units(units) if units is not None else units_from_header(header)
    if chosen is None:
        chosen = detect_units(traj, matrix)
    if chosen == "cycles":
        radians = traj * (2 * math.pi)
    elif chosen == "fov":
        sizes = torch.tensor([float(n) for n in matrix], dtype=traj.dtype, device=traj.device)
        radians = traj * (2 * math.pi) / sizes[:, None]
    else:
        radians = traj
    return wrap_radians(radians)
