"""Non-Cartesian k-space trajectories: 2D radial, 2D spiral, 3D radial (kooshball) and stack-of-stars.

Every function returns a float32 tensor of shape ``(d, K)`` in radians/sample, row ``i`` being the frequency
along image dimension ``i`` (2D rows: ky, kx; 3D rows: kz, ky, kx), every value in [-pi, pi). Samples of
one readout are contiguous. Values that would round to +pi in float32 are clamped just below it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

GOLDEN_ANGLE_RAD = math.pi * 2.0 / (1.0 + math.sqrt(5.0))  # 111.246 degrees: 180 deg / golden ratio
# 2D golden means for 3D radial (Chan et al., MRM 2009): eigenvalue-derived irrational increments.
GOLDEN_MEANS_3D = (0.465571231876768, 0.682327803828019)
# Largest float32 strictly inside (-pi, pi): keeps the range check true in float32 and in float64.
_PI_INSIDE = float(torch.nextafter(torch.tensor(math.pi, dtype=torch.float32),
                                   torch.tensor(0.0, dtype=torch.float32)))


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _finish(points: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Clamp float64 coordinates into [-pi, pi) as seen in float32, then cast and move."""
    return points.clamp(-_PI_INSIDE, _PI_INSIDE).to(device=device, dtype=torch.float32).contiguous()


def readout_radii(n_samples: int) -> torch.Tensor:
    """Radii ``2 pi (j - n//2) / n`` of a full spoke through the centre; sample ``n//2`` is exactly 0."""
    _check_positive("n_samples", n_samples)
    j = torch.arange(n_samples, dtype=torch.float64)
    return 2.0 * math.pi * (j - n_samples // 2) / n_samples


def radial_angles(n_spokes: int, golden_angle: bool = True) -> torch.Tensor:
    """Spoke angles in [0, pi): golden-angle increments (111.246 deg) or uniform increments of pi/n."""
    _check_positive("n_spokes", n_spokes)
    s = torch.arange(n_spokes, dtype=torch.float64)
    step = GOLDEN_ANGLE_RAD if golden_angle else math.pi / n_spokes
    return torch.remainder(s * step, math.pi)


def _radial_2d_points(n_spokes: int, n_samples: int, golden_angle: bool) -> torch.Tensor:
    radii = readout_radii(n_samples)
    angles = radial_angles(n_spokes, golden_angle)
    ky = angles.sin()[:, None] * radii[None, :]
    kx = angles.cos()[:, None] * radii[None, :]
    return torch.stack([ky.reshape(-1), kx.reshape(-1)])


def radial_2d(n_spokes: int = 100, n_samples: int = 640, golden_angle: bool = True,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """2D radial trajectory ``(2, n_spokes * n_samples)`` of full spokes through the k-space centre."""
    return _finish(_radial_2d_points(n_spokes, n_samples, golden_angle), device)


def spiral_turns_for_nyquist(matrix: int, n_interleaves: int) -> int:
    """Turns per interleave so that adjacent turns of all interleaves are at most 2 pi / matrix apart."""
    return max(1, math.ceil(matrix / (2 * n_interleaves)))


def spiral_spacing_factor(rho: torch.Tensor, undersampling: float, center_fraction: float) -> torch.Tensor:
    """Turn spacing relative to Nyquist at k radius ``rho`` (fraction of k_max) of a variable-density spiral.

    1 for ``rho <= center_fraction``, ``undersampling`` beyond ``2 * center_fraction``, and a raised-cosine
    ramp between the two (the ramp ends at k_max at the latest).
    """
    ramp = max(min(center_fraction, 1.0 - center_fraction), 1e-6)
    position = ((rho - center_fraction) / ramp).clamp(0.0, 1.0)
    return 1.0 + (undersampling - 1.0) * 0.5 * (1.0 - torch.cos(math.pi * position))


def _variable_density_radius(n_interleaves: int, matrix: int, undersampling: float, center_fraction: float,
                             n_samples: int) -> tuple[torch.Tensor, float]:
    """Radius (fraction of k_max) at ``n_samples`` equal angle steps, and the total angle, of a VD spiral.

    Adjacent turns of all interleaves are ``2 pi f(rho) / matrix`` apart, so along one interleave
    ``d theta / d rho = pi matrix / (n_interleaves f(rho))``, integrated on a fine grid and inverted.
    """
    rho_grid = torch.linspace(0.0, 1.0, 8193, dtype=torch.float64)
    rate = math.pi * matrix / (n_interleaves * spiral_spacing_factor(rho_grid, undersampling, center_fraction))
    steps = 0.5 * (rate[1:] + rate[:-1]) * (rho_grid[1] - rho_grid[0])
    theta_grid = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(steps, 0)])
    total = float(theta_grid[-1])
    theta = torch.linspace(0.0, total, n_samples, dtype=torch.float64)
    rho = torch.from_numpy(np.interp(theta.numpy(), theta_grid.numpy(), rho_grid.numpy()))
    return rho, total


def spiral_2d(n_interleaves: int = 16, n_samples: int = 2048, matrix: int = 128,
              n_turns: int | None = None, device: torch.device | str = "cpu", undersampling: float = 1.0,
              center_fraction: float = 0.15) -> torch.Tensor:
    """Multi-shot Archimedean spiral ``(2, n_interleaves * n_samples)`` from the centre out to k_max = pi.

    Interleave ``s`` is ``k(t) = pi t exp(i (2 pi n_turns t + 2 pi s / n_interleaves))``, t uniform in [0, 1]
    (constant angular rate). By default ``n_turns`` is the fewest turns that sample a ``matrix``-sized image
    at Nyquist radially (``ceil(matrix / (2 n_interleaves))``); along the readout the edge spacing is
    ``2 pi^2 n_turns / n_samples``, within Nyquist when ``n_samples >= pi n_turns matrix``. The defaults
    (16 x 2048, matrix 128: 4 turns) satisfy both.

    Variable density (``undersampling > 1``): the given interleaves sample the centre, out to
    ``center_fraction`` of k_max, at Nyquist for ``matrix``; beyond ``2 * center_fraction`` adjacent turns are
    ``undersampling`` times the Nyquist distance apart, with a raised-cosine ramp between
    (``spiral_spacing_factor``). The turns then follow from that spacing (``n_turns`` must stay None); the
    angular rate is still constant. With ``n_interleaves = full / R`` and ``undersampling = R`` an
    R-fold accelerated spiral keeps a Nyquist-sampled centre for coil calibration, at the price of
    ``1 + c (R + sqrt(R) - 2)`` times the turns of the uniform R-fold spiral (c = center_fraction; 1.6 at
    R = 4 and the default c), so give it that many more ``n_samples`` to keep the readout spacing.
    """
    _check_positive("n_interleaves", n_interleaves)
    _check_positive("n_samples", n_samples)
    _check_positive("matrix", matrix)
    if not undersampling >= 1.0:
        raise ValueError(f"undersampling must be >= 1, got {undersampling}")
    if not 0.0 < center_fraction < 1.0:
        raise ValueError(f"center_fraction must lie in (0, 1), got {center_fraction}")
    rotation = 2.0 * math.pi * torch.arange(n_interleaves, dtype=torch.float64) / n_interleaves
    if undersampling > 1.0:
        if n_turns is not None:
            raise ValueError("n_turns must be None for a variable-density spiral (undersampling > 1): "
                             "the turns follow from the spacing")
        rho, total_angle = _variable_density_radius(n_interleaves, matrix, undersampling, center_fraction,
                                                    n_samples)
        radius = math.pi * rho
        base_angle = torch.linspace(0.0, total_angle, n_samples, dtype=torch.float64)
    else:
        turns = spiral_turns_for_nyquist(matrix, n_interleaves) if n_turns is None else n_turns
        _check_positive("n_turns", turns)
        t = torch.linspace(0.0, 1.0, n_samples, dtype=torch.float64)
        radius = math.pi * t
        base_angle = 2.0 * math.pi * turns * t
    angle = base_angle[None, :] + rotation[:, None]
    ky = radius[None, :] * angle.sin()
    kx = radius[None, :] * angle.cos()
    return _finish(torch.stack([ky.reshape(-1), kx.reshape(-1)]), device)


def golden_means_directions(n_spokes: int) -> torch.Tensor:
    """Unit spoke directions ``(3, n_spokes)`` (rows z, y, x) over the upper hemisphere by 2D golden means.

    Full spokes through the centre cover the whole sphere, so the hemisphere z in [0, 1) suffices.
    """
    _check_positive("n_spokes", n_spokes)
    s = torch.arange(n_spokes, dtype=torch.float64)
    z = torch.remainder(s * GOLDEN_MEANS_3D[0], 1.0)
    azimuth = 2.0 * math.pi * torch.remainder(s * GOLDEN_MEANS_3D[1], 1.0)
    in_plane = (1.0 - z * z).clamp_min(0.0).sqrt()
    return torch.stack([z, in_plane * azimuth.sin(), in_plane * azimuth.cos()])


def radial_3d(n_spokes: int = 2000, n_samples: int = 64, device: torch.device | str = "cpu") -> torch.Tensor:
    """3D radial "kooshball" ``(3, n_spokes * n_samples)``, rows (kz, ky, kx), golden-means directions."""
    radii = readout_radii(n_samples)
    directions = golden_means_directions(n_spokes)
    points = directions[:, :, None] * radii[None, None, :]
    return _finish(points.reshape(3, -1), device)


def stack_of_stars_partitions(n_partitions: int) -> torch.Tensor:
    """Cartesian kz of each partition: ``2 pi (p - P//2) / P``."""
    _check_positive("n_partitions", n_partitions)
    p = torch.arange(n_partitions, dtype=torch.float64)
    return 2.0 * math.pi * (p - n_partitions // 2) / n_partitions


def stack_of_stars(n_spokes: int = 100, n_samples: int = 256, n_partitions: int = 32,
                   golden_angle: bool = True, device: torch.device | str = "cpu") -> torch.Tensor:
    """Stack of stars ``(3, n_partitions * n_spokes * n_samples)``, rows (kz, ky, kx).

    Every partition repeats the same 2D radial pattern; partition-major, then spoke, then sample order.
    """
    plane = _radial_2d_points(n_spokes, n_samples, golden_angle)
    kz = stack_of_stars_partitions(n_partitions)
    per_plane = plane.shape[1]
    kz_rows = kz.repeat_interleave(per_plane)
    plane_rows = plane.repeat(1, n_partitions)
    return _finish(torch.cat([kz_rows[None, :], plane_rows]), device)
