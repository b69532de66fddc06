from __future__ import annotations

import pytest
import torch

from mrdserve.models.data.coils import coil_sensitivities_2d
from mrdserve.models.data.metrics import psnr
from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.physics.classical import cartesian_cg_sense, cartesian_sense_adjoint
from mrdserve.models.physics.espirit import calibration_region, effective_kernel_size, espirit
from mrdserve.models.physics.fft import fft2c, fft3c
from mrdserve.models.physics.masks import EquispacedFractionMask, EquispacedMask
from tests.physics.coil_phantom import coil_phantom, map_similarity, nrmse


def _noisy_kspace(n: int, n_coils: int = 8, noise: float = 1e-3) -> tuple[torch.Tensor, ...]:
    image, smaps, support = coil_phantom(n, n_coils)
    kspace = fft2c(smaps * image[:, None])
    generator = torch.Generator().manual_seed(0)
    kspace = kspace + noise * kspace.abs().max() * torch.randn(kspace.shape, dtype=kspace.dtype,
                                                               generator=generator)
    return image, smaps, support, kspace


def test_espirit_maps_match_true_maps_up_to_phase() -> None:
    _, smaps, support, kspace = _noisy_kspace(64)
    drawn = EquispacedMask([0.375], [4])(64, seed=0)  # 24 ACS lines
    undersampled = kspace * drawn.kspace_mask()
    maps = espirit(undersampled, drawn.acs_kspace_mask())
    assert maps.shape == smaps.shape and maps.dtype == torch.complex64
    # Measured 0.99999 (BART ecalib agrees with these maps to 0.9998 where it keeps them).
    assert map_similarity(maps, smaps, support) > 0.95
    kept = maps.abs().square().sum(1) > 0
    assert float(kept[support].float().mean()) > 0.99  # eigenvalue ~1 over the whole object
    assert float(kept[~support].float().mean()) < 0.6  # cropped over most of the background
    rss = maps.abs().square().sum(1).sqrt()
    assert torch.allclose(rss[kept], torch.ones(()), atol=1e-4)


def test_espirit_phase_is_relative_to_reference_coil() -> None:
    _, _, _, kspace = _noisy_kspace(48)
    acs = torch.zeros(48, 1, dtype=torch.bool)
    acs[12:36] = True
    maps = espirit(kspace, acs, reference_coil=3, eigen_threshold=0.0)
    assert torch.allclose(maps[:, 3].imag, torch.zeros(()), atol=1e-5)
    assert bool((maps[:, 3].real >= 0).all())


def test_sense_adjoint_with_espirit_maps_recovers_image() -> None:
    image, _, support, kspace = _noisy_kspace(64)
    acs = torch.zeros(64, 1, dtype=torch.bool)
    acs[20:44] = True
    maps = espirit(kspace, acs)
    combined = cartesian_sense_adjoint(kspace, maps)
    # Maps carry an arbitrary smooth phase, so compare magnitudes inside the object.
    assert nrmse(combined.abs()[support], image.abs()[support]) < 0.02


def test_espirit_multiple_maps_and_3d() -> None:
    _, _, _, kspace = _noisy_kspace(32, n_coils=4)
    acs = torch.zeros(32, 1, dtype=torch.bool)
    acs[8:24] = True
    two = espirit(kspace, acs, kernel_size=4, n_maps=2, eigen_threshold=0.0)
    assert two.shape == (1, 2, 4, 32, 32)
    assert torch.allclose(two[:, 0], espirit(kspace, acs, kernel_size=4, eigen_threshold=0.0), atol=1e-5)

    image, smaps, support = coil_phantom(24, n_coils=4)
    depth = 12
    kspace3 = fft3c(smaps[:, :, None].expand(1, 4, depth, 24, 24) * image[:, None, None])
    acs3 = torch.zeros(depth, 24, 1, dtype=torch.bool)
    acs3[2:10, 4:20] = True
    maps3 = espirit(kspace3, acs3, kernel_size=4)
    assert maps3.shape == (1, 4, depth, 24, 24)
    assert map_similarity(maps3[:, :, depth // 2], smaps, support) > 0.95


def test_calibration_region_is_centred_and_cropped() -> None:
    kspace = torch.arange(40 * 30, dtype=torch.float32).reshape(1, 1, 40, 30).to(torch.complex64)
    acs = torch.zeros(40, 1, dtype=torch.bool)
    acs[10:30] = True
    region = calibration_region(kspace, acs, 2, calib_size=16)
    assert region.shape == (1, 1, 16, 16)
    assert int(region[0, 0, 0, 0].real) == 12 * 30 + 7  # rows 12..27, columns 7..22 around (20, 15)


def test_espirit_bad_inputs() -> None:
    _, _, _, kspace = _noisy_kspace(32, n_coils=4)
    acs = torch.zeros(32, 1, dtype=torch.bool)
    acs[14:18] = True
    with pytest.raises(ValueError, match="calibration region"):
        espirit(kspace, acs, kernel_size=6, adapt_kernel=False)
    narrow = torch.zeros(32, 1, dtype=torch.bool)
    narrow[15:17] = True  # 2 lines: narrower than the smallest adapted kernel (3)
    with pytest.raises(ValueError, match="calibration region"):
        espirit(kspace, narrow)
    off_centre = torch.zeros(32, 1, dtype=torch.bool)
    off_centre[:8] = True
    with pytest.raises(ValueError, match="centre"):
        espirit(kspace, off_centre)
    with pytest.raises(ValueError, match="n_maps"):
        espirit(kspace, acs, kernel_size=3, n_maps=5)
    with pytest.raises(TypeError, match="complex"):
        espirit(kspace.real, acs)


def test_effective_kernel_size_rule() -> None:
    # min(kernel_size, max(3, floor(narrowest side / 2.5)))
    assert effective_kernel_size(6, (10, 24)) == 4
    assert effective_kernel_size(6, (8, 24)) == 3
    assert effective_kernel_size(6, (5, 24)) == 3
    assert effective_kernel_size(6, (24, 24)) == 6
    assert effective_kernel_size(2, (10, 24)) == 2  # never larger than asked


def _scaled_psnr(truth: torch.Tensor, estimate: torch.Tensor) -> float:
    truth, estimate = truth.abs().double(), estimate.abs().double()
    return psnr(truth, estimate * (truth * estimate).sum() / estimate.square().sum())


def test_espirit_with_narrow_acs_matches_true_maps() -> None:
    """10 ACS lines at 128 (fastMRI's 8%): kernel 6 used to crop the object (CG-SENSE 13 dB vs 27 dB)."""
    n = 128
    image = complex_phantom_2d((n, n), seed=0)[None]
    smaps = coil_sensitivities_2d(8, (n, n), seed=1)[None]
    kspace = fft2c(smaps * image[:, None])
    generator = torch.Generator().manual_seed(0)
    kspace = kspace + 0.005 * torch.randn(kspace.shape, dtype=kspace.dtype, generator=generator)
    drawn = EquispacedFractionMask([0.08], [4], seed=0)(n)
    assert drawn.num_acs == 10
    mask = drawn.kspace_mask()
    undersampled = kspace * mask
    maps = espirit(undersampled, drawn.acs_kspace_mask())  # kernel 6 asked, 4 used
    support = image.abs() > 0.02
    # Measured 0.9997; every object pixel kept.
    assert map_similarity(maps, smaps, support) > 0.95
    assert bool((maps.abs().square().sum(1) > 0)[support].all())
    with_espirit = _scaled_psnr(image[0], cartesian_cg_sense(undersampled, mask, maps, n_iter=15)[0])
    with_truth = _scaled_psnr(image[0], cartesian_cg_sense(undersampled, mask, smaps, n_iter=15)[0])
    assert with_espirit > with_truth - 1.0  # measured 28.6 vs 26.9 dB (the crop zeroes background noise)
