"""fastMRI files: layout transposed on the way in and out, masks/ACS, oversampling removal, errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrdserve.models.data.fastmri import read_fastmri, write_fastmri
from mrdserve.models.data.ismrmrd_header import build_header
from mrdserve.models.physics.fft import fft2c, ifft2c

S, C, NY, NX = 2, 3, 24, 32  # ours: [S, C, ky (phase), kx (readout)]


def _kspace(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(S, C, NY, NX, dtype=torch.complex64)
    image[..., 6:18, 8:24] = torch.randn(S, C, 12, 16, dtype=torch.complex64, generator=generator)
    return fft2c(image)


def _mask() -> torch.Tensor:
    lines = torch.zeros(NY, dtype=torch.bool)
    lines[1::4] = True
    lines[NY // 2 - 3:NY // 2 + 3] = True
    return lines


def test_round_trip_keeps_our_layout_and_writes_fastmri_layout(tmp_path: Path) -> None:
    lines = _mask()
    kspace = _kspace() * lines[:, None]
    rss = ifft2c(kspace).abs().square().sum(1).sqrt()
    path = tmp_path / "multicoil.h5"
    write_fastmri(path, kspace, reconstruction_rss=rss, mask=lines[:, None],
                  attrs={"acceleration": 4, "num_low_frequency": 6})
    with h5py.File(path, "r") as f:
        assert f["kspace"].shape == (S, C, NX, NY)  # fastMRI: phase encode last
        assert f["reconstruction_rss"].shape == (S, NX, NY)
        np.testing.assert_array_equal(np.asarray(f["kspace"])[0, 1, :, 5], kspace[0, 1, 5].numpy())
    volume = read_fastmri(path)
    assert len(volume.samples) == S and volume.header is None and volume.attrs["acceleration"] == 4
    torch.testing.assert_close(volume.reference, rss)
    for i, sample in enumerate(volume.samples):
        assert sample.index.slice == i and sample.matrix == (NY, NX)
        torch.testing.assert_close(sample.kspace, kspace[i])
        assert torch.equal(sample.mask, lines[:, None])
        expected_acs = torch.zeros(NY, dtype=torch.bool)
        expected_acs[NY // 2 - 3:NY // 2 + 3] = True
        assert torch.equal(sample.acs_mask, expected_acs[:, None])
        assert sample.acceleration == (4,)


def test_mask_inferred_from_nonzero_lines_and_acs_from_the_central_run(tmp_path: Path) -> None:
    lines = _mask()
    kspace = _kspace(1) * lines[:, None]
    path = tmp_path / "nomask.h5"
    write_fastmri(path, kspace)
    sample = read_fastmri(path).samples[0]
    assert torch.equal(sample.mask[:, 0], lines)
    assert torch.nonzero(sample.acs_mask[:, 0]).flatten().tolist() == list(range(NY // 2 - 3, NY // 2 + 3))
    assert sample.acceleration == (round(NY / int(lines.sum())),)


def test_single_coil_files(tmp_path: Path) -> None:
    kspace = _kspace(2)[:, 0]
    path = tmp_path / "singlecoil.h5"
    write_fastmri(path, kspace)
    with h5py.File(path, "r") as f:
        assert f["kspace"].shape == (S, NX, NY)
    samples = read_fastmri(path).samples
    assert samples[0].kspace.shape == (1, NY, NX)
    torch.testing.assert_close(samples[1].kspace[0], kspace[1])


def test_header_gives_recon_matrix_and_removes_readout_oversampling(tmp_path: Path) -> None:
    kspace = _kspace(3)  # the image lives in the central half of the readout
    header = build_header(matrix=(NX, NY), recon_matrix=(NX // 2, NX // 2), fov_mm=(200.0, 150.0, 5.0),
                          recon_fov_mm=(100.0, 100.0, 5.0), n_coils=C)
    path = tmp_path / "header.h5"
    write_fastmri(path, kspace, header=header)
    volume = read_fastmri(path)
    sample = volume.samples[0]
    assert sample.matrix == (NY, NX // 2) and sample.recon_matrix == (NX // 2, NX // 2)
    assert sample.geometry.field_of_view == (100.0, 100.0, 5.0)
    full_image = ifft2c(kspace[0])
    torch.testing.assert_close(ifft2c(sample.kspace), full_image[..., NX // 4:3 * NX // 4], atol=1e-5, rtol=0)
    kept = read_fastmri(path, remove_oversampling=False).samples[0]
    torch.testing.assert_close(kept.kspace, kspace[0])


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        read_fastmri(tmp_path / "missing.h5")
    path = tmp_path / "nokspace.h5"
    with h5py.File(path, "w") as f:
        f["reconstruction_rss"] = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="no 'kspace' dataset"):
        read_fastmri(path)
    with h5py.File(path, "w") as f:
        f["kspace"] = np.zeros((4, 4), np.complex64)
    with pytest.raises(ValueError, match=r"3-D .* or 4-D .* got shape \(4, 4\)"):
        read_fastmri(path)
    truncated = tmp_path / "truncated.h5"
    write_fastmri(truncated, _kspace())
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        read_fastmri(truncated)
    with pytest.raises(ValueError, match="kspace must be"):
        write_fastmri(tmp_path / "bad.h5", torch.zeros(4, 4, dtype=torch.complex64))
