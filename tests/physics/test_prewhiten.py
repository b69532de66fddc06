from __future__ import annotations

import math

import pytest
import torch

from mrdserve.models.physics.prewhiten import noise_bandwidth_scale, noise_covariance, prewhiten, prewhitening_matrix

C = 6


def _correlated_noise(n_samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex noise [C, S] with covariance M M^H (fixed random mixing M; ``seed`` draws the noise)."""
    mixing = torch.randn(C, C, dtype=torch.complex128, generator=torch.Generator().manual_seed(42))
    mixing = mixing + 2 * torch.eye(C)
    generator = torch.Generator().manual_seed(seed)
    white = torch.randn(C, n_samples, dtype=torch.complex128, generator=generator)  # E|w|^2 = 1
    return mixing @ white, mixing @ mixing.conj().T


def test_whitened_noise_has_identity_covariance() -> None:
    noise, true_cov = _correlated_noise(20000)
    cov = noise_covariance(noise)
    # Sample covariance of 20000 samples: relative error ~ 1/sqrt(S) ≈ 0.007 per entry.
    assert torch.allclose(cov, true_cov, atol=0.05 * float(true_cov.abs().max()))
    W = prewhitening_matrix(cov)
    whitened = W @ noise
    assert torch.allclose(noise_covariance(whitened), torch.eye(C, dtype=cov.dtype), atol=1e-10)
    fresh, _ = _correlated_noise(20000, seed=1)  # independent noise: identity within sampling error
    assert torch.allclose(noise_covariance(W @ fresh), torch.eye(C, dtype=cov.dtype), atol=0.05)


def test_prewhitening_matrix_inverts_cholesky_factor() -> None:
    _, true_cov = _correlated_noise(1)
    W = prewhitening_matrix(true_cov)
    factor = torch.linalg.cholesky(true_cov)
    assert torch.allclose(W @ factor, torch.eye(C, dtype=W.dtype), atol=1e-10)
    assert torch.allclose(W.triu(1), torch.zeros_like(W))  # lower triangular like L
    scaled = prewhitening_matrix(true_cov, scale=2.5)
    assert torch.allclose(scaled, 2.5 * W)


def test_prewhiten_applies_along_coil_dim() -> None:
    noise, _ = _correlated_noise(4000)
    W = prewhitening_matrix(noise_covariance(noise))
    kspace = noise.T.reshape(2, 40, 50, C).movedim(-1, 1).to(torch.complex64)  # [B, C, ky, kx]
    whitened = prewhiten(kspace, W)
    assert whitened.shape == kspace.shape and whitened.dtype == torch.complex64
    flat = kspace.movedim(1, 0).reshape(C, -1)
    expected = (W.to(torch.complex64) @ flat).reshape(C, 2, 40, 50).movedim(0, 1)
    assert torch.allclose(whitened, expected, atol=1e-5)
    last = prewhiten(kspace.movedim(1, -1), W, coil_dim=-1)
    assert torch.allclose(last.movedim(-1, 1), whitened, atol=1e-5)


def test_noise_bandwidth_scale_matches_gadgetron_formula() -> None:
    assert noise_bandwidth_scale(5.0, 2.5, 0.793) == pytest.approx(math.sqrt(2 * 2 * 0.793))
    assert noise_bandwidth_scale(0.0, 2.5) == 1.0
    with pytest.raises(ValueError, match="receiver_noise_bandwidth"):
        noise_bandwidth_scale(5.0, 2.5, 0.0)


def test_prewhitening_errors() -> None:
    noise, _ = _correlated_noise(100)
    with pytest.raises(ValueError, match="samples"):
        noise_covariance(noise[:, :3])
    with pytest.raises(TypeError, match="complex"):
        noise_covariance(noise.real)
    singular = torch.ones(C, C, dtype=torch.complex128)  # rank one: duplicated channels
    with pytest.raises(ValueError, match="positive definite"):
        prewhitening_matrix(singular)
    with pytest.raises(ValueError, match="square"):
        prewhitening_matrix(torch.ones(C, C + 1, dtype=torch.complex128))
    W = prewhitening_matrix(noise_covariance(noise))
    with pytest.raises(ValueError, match="coils"):
        prewhiten(torch.zeros(1, C + 1, 4, 4, dtype=torch.complex128), W)
    with pytest.raises(ValueError, match="scale"):
        prewhitening_matrix(noise_covariance(noise), scale=0.0)
