import numpy as np
import torch

from mrdserve.models.physics.fft import fft2c, fft3c, fftnc, ifft2c, ifft3c, ifftnc


def _random(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.complex128)


def test_fft2c_is_orthonormal_and_inverted():
    x = _random((2, 3, 16, 12))
    k = fft2c(x)
    assert torch.allclose(ifft2c(k), x, atol=1e-12)
    assert abs(k.norm() - x.norm()) / x.norm() < 1e-12


def test_fft3c_is_orthonormal_and_inverted():
    x = _random((2, 8, 10, 6))
    k = fft3c(x)
    assert torch.allclose(ifft3c(k), x, atol=1e-12)
    assert abs(k.norm() - x.norm()) / x.norm() < 1e-12


def test_centred_convention_dc_at_n_over_2():
    # a constant image has all its energy at k = n//2 (odd and even sizes)
    for shape in [(8, 8), (7, 9), (6, 5)]:
        k = fft2c(torch.ones(shape, dtype=torch.complex64))
        peak = np.unravel_index(int(k.abs().argmax()), shape)
        assert peak == (shape[0] // 2, shape[1] // 2)
        assert abs(k.abs().max().item() - np.sqrt(np.prod(shape))) < 1e-4


def test_centred_fft_matches_explicit_dft():
    n = 7
    x = _random((n,), seed=3)
    idx = torch.arange(n, dtype=torch.float64) - n // 2
    dft = torch.exp(-2j * torch.pi * idx[:, None] * idx[None, :] / n) / np.sqrt(n)
    assert torch.allclose(fftnc(x, 1), dft.to(torch.complex128) @ x, atol=1e-12)
    assert torch.allclose(ifftnc(fftnc(x, 1), 1), x, atol=1e-12)
