"""Files shaped like what scanners send most and what broke before: a fully sampled scan without calibration
flags (as a Siemens GRE without parallel imaging) and a 2-coil R=2 scan with a noise scan."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mrdserve.models.data.simulate import read_ground_truth, simulate_cartesian, write_simulation


def fully_sampled_without_flags(path: Path, coils: int = 8, matrix: int = 96, slices: int = 1) -> Path:
    """Every ky line acquired, none flagged as calibration, 2x readout oversampling and a noise scan."""
    sim = simulate_cartesian(matrix, n_coils=coils, acceleration=1, n_slices=slices, noise_level=0.01, seed=31)
    write_simulation(path, dataclasses.replace(sim, acs=None))
    return path


def two_coil(path: Path, matrix: int = 96) -> Path:
    """2 coils, R=2 with 16% calibration lines, 3% noise, noise scan."""
    sim = simulate_cartesian(matrix, n_coils=2, acceleration=2, center_fraction=0.16, noise_level=0.03, seed=32)
    write_simulation(path, sim)
    return path


def truth(path: Path):
    """The stored ground-truth magnitudes ``[S, y, x]``."""
    return read_ground_truth(path).abs().numpy()
