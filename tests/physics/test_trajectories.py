"""Trajectories: shapes, dtype, range [-pi, pi), centre samples, angle increments, kz partitions."""

from __future__ import annotations

import math

import pytest
import torch

from mrdserve.models.physics.trajectories import (
    GOLDEN_ANGLE_RAD,
    radial_2d,
    radial_3d,
    spiral_2d,
    stack_of_stars,
)


def _in_range(traj: torch.Tensor) -> bool:
    as32 = bool(((traj >= -math.pi) & (traj < math.pi)).all())
    as64 = bool(((traj.double() >= -math.pi) & (traj.double() < math.pi)).all())
    return as32 and as64


@pytest.mark.parametrize("traj,d,k", [
    (radial_2d(), 2, 100 * 640),
    (radial_2d(13, 33, golden_angle=False), 2, 13 * 33),
    (spiral_2d(), 2, 16 * 2048),
    (radial_3d(200, 32), 3, 200 * 32),
    (stack_of_stars(10, 32, 8), 3, 8 * 10 * 32),
])
def test_shape_dtype_and_range(traj: torch.Tensor, d: int, k: int) -> None:
    assert traj.shape == (d, k)
    assert traj.dtype == torch.float32
    assert _in_range(traj)


def test_radial_2d_centre_and_angles() -> None:
    n_spokes, n_samples = 5, 64
    traj = radial_2d(n_spokes, n_samples).double().reshape(2, n_spokes, n_samples)
    assert torch.all(traj[:, :, n_samples // 2] == 0)
    angles = torch.atan2(traj[0, :, -1], traj[1, :, -1])  # last sample points along +direction
    steps = torch.remainder(angles.diff(), math.pi)
    expected = math.remainder(GOLDEN_ANGLE_RAD, math.pi) % math.pi
    assert math.degrees(GOLDEN_ANGLE_RAD) == pytest.approx(111.246, abs=1e-3)
    assert torch.allclose(steps, torch.full_like(steps, expected), atol=1e-6)
    radius = traj.norm(dim=0)
    assert radius.max() == pytest.approx(math.pi, abs=1e-6)


def test_radial_2d_uniform_increment() -> None:
    traj = radial_2d(8, 16, golden_angle=False).double().reshape(2, 8, 16)
    angles = torch.atan2(traj[0, :, -1], traj[1, :, -1])
    assert torch.allclose(angles.diff(), torch.full((7,), math.pi / 8, dtype=torch.float64), atol=1e-6)


def test_spiral_reaches_kmax_and_interleaves_rotate() -> None:
    n_interleaves, n_samples = 4, 256
    traj = spiral_2d(n_interleaves, n_samples, matrix=32).double().reshape(2, n_interleaves, n_samples)
    assert torch.all(traj[:, :, 0] == 0)
    assert traj[:, :, -1].norm(dim=0).min() == pytest.approx(math.pi, abs=1e-6)
    ends = torch.atan2(traj[0, :, -1], traj[1, :, -1])
    steps = torch.remainder(ends.diff(), 2 * math.pi)
    assert torch.allclose(steps, torch.full_like(steps, 2 * math.pi / n_interleaves), atol=1e-5)


def test_radial_3d_spokes_cover_the_sphere() -> None:
    traj = radial_3d(400, 16).double().reshape(3, 400, 16)
    directions = traj[:, :, -1] / traj[:, :, -1].norm(dim=0)
    assert torch.all(traj[:, :, 8] == 0)
    assert directions[0].min() >= 0  # hemisphere of z: full spokes cover both
    # golden means: z uniform on [0, 1) and azimuth uniform -> mean z ~ 1/2, mean of in-plane direction ~ 0
    assert directions[0].mean() == pytest.approx(0.5, abs=0.02)
    assert directions[1:].mean(dim=1).abs().max() < 0.05


def test_stack_of_stars_partitions() -> None:
    n_spokes, n_samples, n_partitions = 6, 16, 5
    traj = stack_of_stars(n_spokes, n_samples, n_partitions).double()
    kz = traj[0].reshape(n_partitions, -1)
    partitions = torch.arange(n_partitions, dtype=torch.float64)
    expected = 2 * math.pi * (partitions - n_partitions // 2) / n_partitions
    assert torch.allclose(kz, expected[:, None].expand_as(kz), atol=1e-6)
    plane = radial_2d(n_spokes, n_samples).double()
    for p in range(n_partitions):
        assert torch.equal(traj[1:, p * plane.shape[1]:(p + 1) * plane.shape[1]], plane)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="n_spokes"):
        radial_2d(0, 10)
    with pytest.raises(ValueError, match="n_samples"):
        spiral_2d(4, -1)


def _turn_spacing(traj: torch.Tensor, n_interleaves: int, n_samples: int, rho: float) -> float:
    """Radial distance between adjacent arms (all interleaves) at radius rho * pi, along one direction."""
    points = traj.double().reshape(2, n_interleaves, n_samples)
    radius = points.norm(dim=0)
    angle = torch.atan2(points[0], points[1])
    # Crossings of the +x half-axis (angle wraps from - to +) give each arm's radius there.
    crossings = []
    for s in range(n_interleaves):
        wraps = ((angle[s, :-1] < 0) & (angle[s, 1:] >= 0)).nonzero().flatten()
        crossings.append(radius[s, wraps + 1])
    radii = torch.sort(torch.cat(crossings)).values
    gaps = radii.diff()
    centres = 0.5 * (radii[1:] + radii[:-1])
    return float(gaps[(centres - rho * math.pi).abs().argmin()])


def test_variable_density_spiral_is_nyquist_in_the_centre_and_r_fold_outside() -> None:
    matrix, n_interleaves, n_samples, r = 64, 2, 4000, 4.0
    traj = spiral_2d(n_interleaves, n_samples, matrix=matrix, undersampling=r, center_fraction=0.15)
    assert traj.shape == (2, n_interleaves * n_samples) and _in_range(traj)
    points = traj.double().reshape(2, n_interleaves, n_samples)
    assert torch.all(points[:, :, 0] == 0)
    assert points[:, :, -1].norm(dim=0).min() == pytest.approx(math.pi, abs=1e-5)
    nyquist = 2 * math.pi / matrix
    assert _turn_spacing(traj, n_interleaves, n_samples, 0.08) == pytest.approx(nyquist, rel=0.1)
    assert _turn_spacing(traj, n_interleaves, n_samples, 0.7) == pytest.approx(r * nyquist, rel=0.1)
    # The uniform default is untouched by the new arguments.
    assert torch.equal(spiral_2d(4, 256, matrix=32, center_fraction=0.3), spiral_2d(4, 256, matrix=32))


def test_variable_density_spiral_calibrates_coils_at_r4() -> None:
    """Uniform R=4 spirals undersample the centre too (maps similarity 0.82 at 96^2); the VD one does not."""
    from mrdserve.models.data.coils import coil_sensitivities_2d
    from mrdserve.models.data.phantoms import complex_phantom_2d
    from mrdserve.models.physics.density import pipe_menon_density
    from mrdserve.models.physics.nufft import NufftOp
    from mrdserve.models.physics.sensitivities import sensitivities_noncartesian
    from tests.physics.coil_phantom import map_similarity

    n = 96
    image = complex_phantom_2d((n, n), seed=0)[None]
    smaps = coil_sensitivities_2d(8, (n, n), seed=1)[None]
    traj = spiral_2d(3, 3621, matrix=n, undersampling=4.0)  # 12 interleaves are Nyquist at 96
    op = NufftOp(traj, (n, n), density=pipe_menon_density(traj, (n, n)))
    data = op.forward_coils(smaps * image[:, None])
    generator = torch.Generator().manual_seed(0)
    data = data + 0.005 * torch.randn(data.shape, dtype=data.dtype, generator=generator)
    estimate = sensitivities_noncartesian(data, op)
    assert map_similarity(estimate, smaps, image.abs() > 0.02) > 0.95  # measured 0.996


def test_variable_density_arguments_validated() -> None:
    with pytest.raises(ValueError, match="undersampling"):
        spiral_2d(4, 64, undersampling=0.5)
    with pytest.raises(ValueError, match="center_fraction"):
        spiral_2d(4, 64, undersampling=2.0, center_fraction=1.0)
    with pytest.raises(ValueError, match="n_turns"):
        spiral_2d(4, 64, undersampling=2.0, n_turns=3)
