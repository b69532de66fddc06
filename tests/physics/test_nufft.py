"""NufftOp: adjointness, agreement with an exact non-uniform DFT, backend agreement, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch

from mrdserve.models.physics.fft import fft2c
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.nufft_cache import FINUFFT_PLANS, trajectory_hash
from mrdserve.models.physics.trajectories import radial_2d, radial_3d
from tests.physics.conftest import assert_adjoint, random_complex, relative_error

BACKENDS = ["finufft", "torchkbnufft"]
SHAPE_2D = (16, 16)
SHAPE_3D = (8, 10, 12)


def _traj(shape: tuple[int, ...]) -> torch.Tensor:
    return radial_2d(24, 16) if len(shape) == 2 else radial_3d(60, 12)


def _dft_matrix(traj: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Exact E[k, n] = prod(N)^-1/2 exp(-i omega_k . (n - N//2)), pixels in C order."""
    axes = [torch.arange(n, dtype=torch.float64) - n // 2 for n in shape]
    positions = torch.stack([g.reshape(-1) for g in torch.meshgrid(*axes, indexing="ij")])
    return torch.exp(-1j * (traj.double().T @ positions)) / math.sqrt(math.prod(shape))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D])
@pytest.mark.parametrize("n_coils", [1, 3])
def test_dot_product(backend: str, shape: tuple[int, ...], n_coils: int) -> None:
    traj = _traj(shape)
    smaps = random_complex(2, n_coils, *shape, seed=1) if n_coils > 1 else None
    op = NufftOp(traj, shape, smaps=smaps, backend=backend)
    assert_adjoint(op, (2, *shape), (2, n_coils, traj.shape[1]), seed=2, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D])
def test_matches_exact_nudft(backend: str, shape: tuple[int, ...]) -> None:
    traj = _traj(shape)
    matrix = _dft_matrix(traj, shape)
    op = NufftOp(traj, shape, backend=backend)
    x = random_complex(2, 3, *shape, seed=4)
    y = random_complex(2, 3, traj.shape[1], seed=5)
    assert relative_error(op.forward_coils(x).reshape(6, -1), x.reshape(6, -1) @ matrix.T) < 1e-3
    assert relative_error(op.adjoint_coils(y).reshape(6, -1), y.reshape(6, -1) @ matrix.conj()) < 1e-3


def test_backends_agree_in_single_precision() -> None:
    traj = radial_2d(30, 32)
    smaps = random_complex(1, 4, 32, 32, seed=6).to(torch.complex64)
    x = random_complex(1, 32, 32, seed=7).to(torch.complex64)
    fast = NufftOp(traj, (32, 32), smaps=smaps, backend="finufft")
    slow = NufftOp(traj, (32, 32), smaps=smaps, backend="torchkbnufft")
    y_fast, y_slow = fast.forward(x), slow.forward(x)
    assert y_fast.dtype == torch.complex64
    assert relative_error(y_fast, y_slow) < 1e-3
    assert relative_error(fast.adjoint(y_fast), slow.adjoint(y_fast)) < 1e-3


def test_full_cartesian_trajectory_is_the_centred_fft() -> None:
    n = 12
    k = 2 * math.pi * (torch.arange(n, dtype=torch.float64) - n // 2) / n
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    traj = torch.stack([ky.reshape(-1), kx.reshape(-1)])
    x = random_complex(1, n, n, seed=8)
    y = NufftOp(traj, (n, n), backend="finufft").forward(x)
    assert relative_error(y.reshape(1, n, n), fft2c(x)) < 1e-5


def test_weighted_adjoint_applies_density() -> None:
    traj = radial_2d(10, 16)
    weights = torch.rand(traj.shape[1], generator=torch.Generator().manual_seed(0))
    op = NufftOp(traj, SHAPE_2D, density=weights)
    y = random_complex(1, 1, traj.shape[1], seed=9)
    assert relative_error(op.weighted_adjoint(y), op.adjoint(y * weights.double())) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_is_the_adjoint(backend: str) -> None:
    traj = radial_2d(12, 16)
    op = NufftOp(traj, SHAPE_2D, backend=backend)
    x = random_complex(1, *SHAPE_2D, seed=10).requires_grad_()
    target = random_complex(1, 1, traj.shape[1], seed=11)
    residual = op.forward(x) - target
    loss = residual.abs().pow(2).sum()
    loss.backward()
    expected = 2 * op.adjoint(residual.detach())  # d/dx* ||Ax - b||^2 in torch's convention
    assert relative_error(x.grad, expected) < 1e-6


def test_finufft_gradient_through_adjoint() -> None:
    traj = radial_2d(12, 16)
    op = NufftOp(traj, SHAPE_2D, backend="finufft")
    y = random_complex(1, 1, traj.shape[1], seed=12).requires_grad_()
    image = op.adjoint(y)
    image.abs().pow(2).sum().backward()
    assert relative_error(y.grad, 2 * op.forward(image.detach())) < 1e-6


def test_plans_are_cached_and_bounded() -> None:
    FINUFFT_PLANS.clear()
    traj = radial_2d(8, 16)
    op = NufftOp(traj, SHAPE_2D, backend="finufft")
    x = random_complex(1, 2, *SHAPE_2D, seed=13)
    op.forward_coils(x)
    op.adjoint_coils(op.forward_coils(x))
    assert len(FINUFFT_PLANS) == 1  # one type-2 plan serves forward and adjoint
    for batch in range(1, 12):
        op.forward_coils(random_complex(batch, 1, *SHAPE_2D, seed=batch))
    assert len(FINUFFT_PLANS) <= FINUFFT_PLANS.max_entries


def test_trajectory_hash_depends_on_values() -> None:
    traj = radial_2d(8, 16)
    assert trajectory_hash(traj) == trajectory_hash(traj.clone())
    changed = traj.clone()
    changed[0, 3] += 1e-3
    assert trajectory_hash(traj) != trajectory_hash(changed)


def test_invalid_inputs_raise() -> None:
    traj = radial_2d(8, 16)
    with pytest.raises(ValueError, match="trajectory has 2 rows"):
        NufftOp(traj, (8, 8, 8))
    with pytest.raises(ValueError, match="backend"):
        NufftOp(traj, SHAPE_2D, backend="magic")
    with pytest.raises(ValueError, match="smaps"):
        NufftOp(traj, SHAPE_2D, smaps=torch.ones(1, 2, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="density"):
        NufftOp(traj, SHAPE_2D, density=torch.ones(3))
    op = NufftOp(traj, SHAPE_2D)
    with pytest.raises(TypeError, match="image"):
        op.forward(torch.ones(1, *SHAPE_2D))
    with pytest.raises(ValueError, match="data"):
        op.adjoint(torch.ones(1, 1, 5, dtype=torch.complex64))
