"""Trajectory units: each unit recognised from its range, header and override win, out-of-range error."""

from __future__ import annotations

import math

import pytest
import torch

from mrdserve.models.data.ismrmrd_header import build_header
from mrdserve.models.data.trajectory_units import detect_units, to_radians, units_from_header

MATRIX = (64, 64)


def _radial_radians(n_spokes: int = 8, n_samples: int = 64) -> torch.Tensor:
    """Radial spokes in radians/sample inside (-pi, pi) (rows ky, kx)."""
    radius = 0.98 * torch.linspace(-math.pi, math.pi, n_samples + 1)[:-1]
    angles = torch.arange(n_spokes) * math.pi / n_spokes
    ky = (torch.sin(angles)[:, None] * radius).reshape(-1)
    kx = (torch.cos(angles)[:, None] * radius).reshape(-1)
    return torch.stack([ky, kx]).to(torch.float64)


def test_each_unit_is_recognised_from_its_range() -> None:
    radians = _radial_radians()
    cycles = radians / (2 * math.pi)
    fov = radians * MATRIX[0] / (2 * math.pi)
    assert detect_units(radians, MATRIX) == "radians"
    assert detect_units(cycles, MATRIX) == "cycles"
    assert detect_units(fov, MATRIX) == "fov"
    for traj in (radians, cycles, fov):
        torch.testing.assert_close(to_radians(traj, MATRIX), radians, atol=1e-9, rtol=0)


def test_fov_units_use_the_matrix_of_each_axis() -> None:
    radians = _radial_radians() * 0.9
    matrix = (32, 128)
    fov = radians * torch.tensor([32.0, 128.0], dtype=radians.dtype)[:, None] / (2 * math.pi)
    torch.testing.assert_close(to_radians(fov, matrix), radians, atol=1e-9, rtol=0)


def test_override_wins_over_range_and_header() -> None:
    small = _radial_radians() * 0.1  # max 0.314: the range alone would say cycles
    assert detect_units(small, MATRIX) == "cycles"
    torch.testing.assert_close(to_radians(small, MATRIX, units="radians"), small, atol=1e-12, rtol=0)
    header = build_header((64, 64), trajectory="radial", trajectory_units="cycles/pixel")
    assert units_from_header(header) == "cycles"
    torch.testing.assert_close(to_radians(small, MATRIX, units="radians", header=header), small,
                               atol=1e-12, rtol=0)


def test_header_names_the_units() -> None:
    small = _radial_radians() * 0.1
    header = build_header((64, 64), trajectory="radial", trajectory_units="radians")
    torch.testing.assert_close(to_radians(small, MATRIX, header=header), small, atol=1e-12, rtol=0)


def test_result_wrapped_into_minus_pi_pi() -> None:
    traj = torch.tensor([[0.5, -0.5, 0.25], [0.0, 0.49, -0.25]], dtype=torch.float64)
    result = to_radians(traj, MATRIX, units="cycles")
    assert float(result.max()) < math.pi and float(result.min()) >= -math.pi
    assert float(result[0, 0]) == pytest.approx(-math.pi)  # +0.5 cycles and -0.5 cycles are the same sample


def test_out_of_range_raises_naming_the_max_value() -> None:
    traj = torch.tensor([[0.0, 40.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match=r"max \|k\| = 40.*cycles.*radians.*1/FOV"):
        to_radians(traj, MATRIX)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="trajectory units not recognised"):
        to_radians(torch.zeros(2, 4), MATRIX, units="furlongs")
    with pytest.raises(ValueError, match=r"\(d, K\)"):
        to_radians(torch.zeros(4), MATRIX)
    with pytest.raises(ValueError, match="NaN"):
        to_radians(torch.tensor([[float("nan")], [0.0]]), MATRIX)
