"""Non-Cartesian k-space trajectories: 2D radial, 2D spiral, 3D radial (kooshball) and stack-of-stars.

Every function returns a float32 tensor of shape ``(d, K)`` in radians/sample, row ``i`` being the frequency
along image dimension ``i`` (2D rows: ky, kx; 3D rows: kz, ky, kx), every value in [-pi, pi). Samples of
one readout are contiguous. Values that would round to +pi in float32 are clamped just below it.
"""

from __future__ import annotations

import math

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


def spiral_2d(n_interleaves: int = 16, n_samples: int = 2048, matrix: int = 128,
              n_turns: int | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Multi-shot Archimedean spiral ``(2, n_interleaves * n_samples)`` from the centre out to k_max = pi.

    Interleave ``s`` is ``k(t) = pi t exp(i (2 pi n_turns t + 2 pi s / n_interleaves))``, t uniform in [0, 1]
    (constant angular rate). By default ``n_turns`` is the fewest turns that sample a ``matrix``-sized image
    at Nyquist radially (``ceil(matrix / (2 n_interleaves))``); along the readout the edge spacing is
    ``2 pi^2 n_turns / n_samples``, within Nyquist when ``n_samples >= pi n_turns matrix``. The defaults
    (16 x 2048, matrix 128: 4 turns) satisfy both.
    """
    _check_positive("n_interleaves", n_interleaves)
    _check_positive("n_samples", n_samples)
    _check_positive("matrix", matrix)
    turns = spiral_turns_for_nyquist(matrix, n_interleaves) if n_turns is None else n_turns
    _check_positive("n_turns", turns)
    t = torch.linspace(0.0, 1.0, n_samples, dtype=torch.float64)
    radius = math.pi * t
    base_angle = 2.0 * math.pi * turns * t
    rotation = 2.0 * math.pi * torch.arange(n_interleaves, dtype=torch.float64) / n_interleaves
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
