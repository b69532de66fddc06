"""Against ISMRMRD's own reference tools (Debian ismrmrd-tools): the Shepp-Logan generator's files read
correctly (noise calibration, 2x readout oversampling, accelerated with embedded calibration lines)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest
import torch

from mrdserve.models.data.ismrmrd_io import read_acquisitions, read_ismrmrd
from mrdserve.models.physics.classical import cartesian_cg_sense, zero_filled_rss
from mrdserve.models.physics.sensitivities import sensitivities_from_acs

GENERATOR = "ismrmrd_generate_cartesian_shepp_logan"
RECON = "ismrmrd_recon_cartesian_2d"
MATRIX, COILS = 64, 4

pytestmark = pytest.mark.skipif(
    shutil.which(GENERATOR) is None or shutil.which(RECON) is None,
    reason=f"{GENERATOR} / {RECON} not installed (Debian package ismrmrd-tools)")


def _generate(path: Path, *extra: str) -> Path:
    subprocess.run([GENERATOR, "-m", str(MATRIX), "-c", str(COILS), "-C", "-o", str(path), *extra],
                   check=True, capture_output=True, timeout=60)
    return path


def _complex(dataset: h5py.Dataset) -> np.ndarray:
    values = np.asarray(dataset)
    return values["real"] + 1j * values["imag"]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_unaccelerated_matches_the_reference_reconstruction(tmp_path: Path) -> None:
    path = _generate(tmp_path / "full.h5")  # default: 2x readout oversampling, noise level 0.05
    _, samples = read_ismrmrd(path)
    assert len(samples) == 1
    sample = samples[0]
    assert sample.prewhitened
    assert sample.matrix == (MATRIX, MATRIX) and sample.recon_matrix == (MATRIX, MATRIX)
    assert bool(sample.mask.all()) and sample.acs_mask is None
    ours = zero_filled_rss(sample.kspace[None])[0].numpy()

    subprocess.run([RECON, str(path)], check=True, capture_output=True, timeout=60)
    with h5py.File(path, "r") as f:
        reference = np.asarray(f["dataset/cpp/data"])[0, 0, 0]  # [y, x] after its own oversampling crop
    assert reference.shape == ours.shape
    assert _correlation(ours, reference) > 0.99


def test_accelerated_lines_flags_and_cg_sense(tmp_path: Path) -> None:
    # Noise level 0.01 instead of the default 0.05: at 0.05 even the fully sampled RSS correlates only
    # 0.968 with the noise-free phantom, which leaves no margin for judging the CG-SENSE baseline.
    path = _generate(tmp_path / "accelerated.h5", "-a", "2", "-w", "16", "-n", "0.01")
    _, acquisitions = read_acquisitions(path)
    _, samples = read_ismrmrd(path)
    # the generator interleaves the R=2 lattice over repetitions, calibration lines in each
    assert [s.index.repetition for s in samples] == [0, 1]
    for sample in samples:
        mine = [a for a in acquisitions if a.idx.repetition == sample.index.repetition
                and not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
        sampled = sorted({a.idx.kspace_encode_step_1 for a in mine})
        calibration = sorted({a.idx.kspace_encode_step_1 for a in mine
                              if a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
                              or a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)})
        assert torch.nonzero(sample.mask[:, 0]).flatten().tolist() == sampled  # e1 center 32 = row 32
        assert torch.nonzero(sample.acs_mask[:, 0]).flatten().tolist() == calibration
        assert len(calibration) == 16 and sample.acceleration == (2,)
        rows_with_data = sample.kspace.abs().amax(dim=(0, 2)) > 0
        assert torch.equal(rows_with_data, sample.mask[:, 0])

    with h5py.File(path, "r") as f:
        phantom = np.abs(_complex(f["dataset/phantom"])[0])
    sample = samples[0]
    kspace = sample.kspace[None]
    smaps = sensitivities_from_acs(kspace, sample.acs_mask)
    image = cartesian_cg_sense(kspace, sample.mask, smaps, n_iter=15)[0].abs().numpy()
    assert _correlation(image, phantom) > 0.95
    assert _correlation(image, phantom) > _correlation(zero_filled_rss(kspace)[0].numpy(), phantom)
