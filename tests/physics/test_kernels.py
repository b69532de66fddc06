"""The shared export-safe kernels: each form equals its reference (explicit per-coil maths, the NUFFT normal
operator, or its complex form for the real/imaginary-channel forms) and scripts."""

from __future__ import annotations

import warnings

import pytest
import torch

from mrdserve.models.physics import kernels
from mrdserve.models.physics.fft import fftnc, ifftnc
from mrdserve.models.physics.kernels import (
    combine_coils,
    combine_coils_channels,
    expand_coils,
    expand_coils_channels,
    sense_expand,
    sense_gradient,
    sense_reduce,
    toeplitz_product,
    toeplitz_product_channels,
)
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.sense import SenseOp
from mrdserve.models.physics.toeplitz import toeplitz_kernel
from mrdserve.models.physics.trajectories import radial_2d, radial_3d
from tests.physics.conftest import random_complex, relative_error

SPATIAL = [(8, 6), (4, 6, 5)]


def _mask(spatial: tuple[int, ...], seed: int) -> torch.Tensor:
    lines = torch.rand((*spatial[:-1], 1), generator=torch.Generator().manual_seed(seed)) > 0.4
    return lines.to(torch.float64)


@pytest.mark.parametrize("spatial", SPATIAL)
def test_sense_expand_is_the_masked_fft_of_each_coil_image(spatial):
    image = random_complex(2, 1, *spatial, seed=0)
    smaps = random_complex(2, 3, *spatial, seed=1)
    mask = _mask(spatial, 2)
    unmasked = torch.stack([fftnc(smaps[:, c] * image[:, 0], len(spatial)) for c in range(3)], dim=1)
    assert torch.allclose(sense_expand(image, smaps, mask), mask * unmasked, atol=1e-12)
    assert torch.allclose(sense_expand(image, smaps, None), unmasked, atol=1e-12)


@pytest.mark.parametrize("spatial", SPATIAL)
def test_sense_reduce_combines_the_masked_inverse_ffts(spatial):
    kspace = random_complex(2, 3, *spatial, seed=3)
    smaps = random_complex(2, 3, *spatial, seed=4)
    mask = _mask(spatial, 5)
    n = len(spatial)
    expected = sum(smaps[:, c].conj() * ifftnc(mask * kspace[:, c], n) for c in range(3)).unsqueeze(1)
    assert torch.allclose(sense_reduce(kspace, smaps, mask), expected, atol=1e-12)
    image = random_complex(2, 1, *spatial, seed=6)
    lhs = torch.vdot(sense_expand(image, smaps, mask).reshape(-1), kspace.reshape(-1))
    rhs = torch.vdot(image.reshape(-1), sense_reduce(kspace, smaps, mask).reshape(-1))
    assert abs(lhs - rhs) / abs(lhs) < 1e-12  # reduce is the adjoint of expand


def test_sense_gradient_equals_the_operator_form():
    smaps = random_complex(2, 4, 8, 6, seed=7)
    mask = _mask((8, 6), 8)
    op = SenseOp(smaps, mask)
    image, measured = random_complex(2, 8, 6, seed=9), random_complex(2, 4, 8, 6, seed=10)
    expected = op.adjoint(op.forward(image) - measured)
    assert torch.allclose(sense_gradient(image.unsqueeze(1), measured, smaps, mask).squeeze(1), expected,
                          atol=1e-12)


def test_coil_channel_forms_equal_the_complex_forms():
    image = random_complex(2, 1, 5, 7, seed=11, dtype=torch.complex64)
    smaps = random_complex(2, 3, 5, 7, seed=12, dtype=torch.complex64)
    coils = expand_coils(image, smaps)
    coils_re, coils_im = expand_coils_channels(image.real, image.imag, smaps.real, smaps.imag)
    assert torch.allclose(torch.complex(coils_re, coils_im), coils, atol=1e-6)
    combined_re, combined_im = combine_coils_channels(coils.real, coils.imag, smaps.real, smaps.imag)
    assert torch.allclose(torch.complex(combined_re, combined_im), combine_coils(coils, smaps), atol=1e-5)
    assert combine_coils(coils, smaps).shape == image.shape


@pytest.mark.parametrize(("shape", "traj"), [((12, 10), radial_2d(20, 24)), ((6, 8, 7), radial_3d(60, 16))])
def test_toeplitz_product_is_the_weighted_normal_operator(shape, traj):
    weights = torch.rand(traj.shape[1], generator=torch.Generator().manual_seed(13))
    op = NufftOp(traj, shape, density=weights, backend="finufft")
    kernel = toeplitz_kernel(traj, shape, weights, dtype=torch.complex128)
    x = random_complex(2, *shape, seed=14)
    expected = op.weighted_adjoint(op.forward(x))
    assert relative_error(toeplitz_product(x, kernel, len(shape)), expected) < 1e-4
    in_place = toeplitz_product(x, kernel, len(shape), in_place=True)
    assert torch.equal(in_place, toeplitz_product(x, kernel, len(shape)))


@pytest.mark.parametrize("per_sample", [False, True])
def test_toeplitz_channel_form_equals_the_complex_form(per_sample):
    image = random_complex(2, 3, 6, 7, seed=15, dtype=torch.complex64)
    kernel = random_complex(*((2, 1) if per_sample else ()), 12, 14, seed=16, dtype=torch.complex64)
    re, im = toeplitz_product_channels(image.real, image.imag, kernel.real, kernel.imag, 2)
    assert torch.allclose(torch.complex(re, im), toeplitz_product(image, kernel, 2), atol=1e-5)


def test_every_kernel_scripts_and_matches_eager():
    image = random_complex(2, 1, 6, 7, seed=17, dtype=torch.complex64)
    smaps = random_complex(2, 3, 6, 7, seed=18, dtype=torch.complex64)
    kspace = random_complex(2, 3, 6, 7, seed=19, dtype=torch.complex64)
    kernel = random_complex(12, 14, seed=20, dtype=torch.complex64)
    mask = _mask((6, 7), 21).to(torch.float32)
    calls = {
        "expand_coils": (image, smaps),
        "combine_coils": (kspace, smaps),
        "sense_expand": (image, smaps, mask),
        "sense_reduce": (kspace, smaps, mask),
        "sense_gradient": (image, kspace, smaps, mask),
        "toeplitz_product": (kspace, kernel, 2),
        "expand_coils_channels": (image.real, image.imag, smaps.real, smaps.imag),
        "combine_coils_channels": (kspace.real, kspace.imag, smaps.real, smaps.imag),
        "toeplitz_product_channels": (kspace.real, kspace.imag, kernel.real, kernel.imag, 2),
    }
    for name, arguments in calls.items():
        function = getattr(kernels, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.script(function)
        eager, compiled = function(*arguments), scripted(*arguments)
        for want, got in zip(eager if isinstance(eager, tuple) else (eager,),
                             compiled if isinstance(compiled, tuple) else (compiled,), strict=True):
            assert torch.allclose(got, want, atol=1e-6), name


def test_sense_cg_equals_the_classical_conjugate_gradient_per_sample():
    from mrdserve.models.physics.classical import cartesian_cg_sense

    kspace = random_complex(2, 3, 12, 10, seed=5).to(torch.complex64)
    smaps = random_complex(2, 3, 12, 10, seed=6).to(torch.complex64)
    mask = _mask((12, 10), seed=7).to(torch.float32).expand(2, 1, 12, 10)
    kspace = kspace * mask
    l2 = torch.tensor([0.3, 0.01]).reshape(-1, 1, 1, 1)
    solved = kernels.sense_cg(sense_reduce(kspace, smaps, mask), smaps, mask, l2, 20)
    for b in range(2):
        expected = cartesian_cg_sense(kspace[b:b + 1], mask[b:b + 1].bool(), smaps[b:b + 1], n_iter=20,
                                      l2=float(l2[b]), tol=0.0)
        assert relative_error(solved[b:b + 1].reshape(expected.shape), expected) < 1e-5
    zero = kernels.sense_cg(torch.zeros_like(solved), smaps, mask, l2, 5)  # converged from the start: no 0/0
    assert bool(torch.isfinite(zero.real).all()) and float(zero.abs().max()) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(kernels.sense_cg)


def test_edge_noise_variance_is_the_classical_estimate_in_export_safe_form():
    from mrdserve.models.physics.noise_level import kspace_noise_variance

    g = torch.Generator().manual_seed(3)
    noise = torch.complex(torch.randn(2, 4, 64, 128, generator=g), torch.randn(2, 4, 64, 128, generator=g))
    mask = (torch.arange(64) % 2 == 0).float().reshape(1, 1, 64, 1).expand(2, 1, 64, 128).clone()
    mask[1] = 0.0  # nothing measured: 0, not a sort's padding
    kspace = noise * torch.tensor([0.5, 1.0]).reshape(-1, 1, 1, 1) * mask
    variance = kernels.edge_noise_variance(kspace, mask)
    assert variance.shape == (2, 1, 1, 1) and float(variance[1]) == 0.0
    assert abs(float(variance[0]) - 0.5) < 0.05  # complex variance 2 * 0.25
    assert abs(float(variance[0]) - kspace_noise_variance(kspace[:1])) < 0.01 * 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(kernels.edge_noise_variance)


def test_sense_fit_noise_variance_sees_the_noise_and_not_the_signal():
    # 8 coils, every 2nd line: a clean smooth object fits the SENSE model (estimate ~0, where the readout edge's
    # quantile still sees its signal); added white noise of complex variance 0.02 is what the misfit measures
    from mrdserve.models.data.coils import coil_sensitivities_2d
    from mrdserve.models.data.phantoms import complex_phantom_2d

    maps = coil_sensitivities_2d(8, (48, 48), seed=2).unsqueeze(0).to(torch.complex64)
    smaps = maps / maps.abs().square().sum(dim=1, keepdim=True).sqrt()
    image = complex_phantom_2d((48, 48), seed=2).reshape(1, 1, 48, 48).to(torch.complex64)
    mask = (torch.arange(48) % 2 == 0).float().reshape(1, 1, 48, 1).expand(1, 1, 48, 48)
    clean = sense_expand(image, smaps, mask)
    g = torch.Generator().manual_seed(4)
    white = torch.complex(torch.randn(clean.shape, generator=g), torch.randn(clean.shape, generator=g)) * 0.1
    noisy = clean + white * mask
    clean_estimate = float(kernels.sense_fit_noise_variance(clean, smaps, mask, 30))
    assert clean_estimate < 0.05 * float(kernels.edge_noise_variance(clean, mask))
    assert abs(float(kernels.sense_fit_noise_variance(noisy, smaps, mask, 30)) - 0.02) < 0.004
