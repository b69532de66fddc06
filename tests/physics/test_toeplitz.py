"""Toeplitz normal operator: equals forward-then-adjoint (2D/3D, weights, multicoil); scripts."""

from __future__ import annotations

import warnings

import pytest
import torch

from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.toeplitz import toeplitz_apply, toeplitz_kernel
from mrdserve.models.physics.trajectories import radial_2d, radial_3d, spiral_2d
from tests.physics.conftest import assert_normal, random_complex

CASES = [
    ((16, 16), radial_2d(24, 32)),
    ((12, 20), spiral_2d(4, 256, matrix=20)),
    ((8, 10, 12), radial_3d(80, 16)),
]


@pytest.mark.parametrize("shape,traj", CASES)
@pytest.mark.parametrize("with_weights", [False, True])
@pytest.mark.parametrize("n_coils", [1, 3])
@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
def test_normal_equals_forward_then_adjoint(shape: tuple[int, ...], traj: torch.Tensor, with_weights: bool,
                                            n_coils: int, dtype: torch.dtype) -> None:
    weights = torch.rand(traj.shape[1], generator=torch.Generator().manual_seed(1)) if with_weights else None
    smaps = random_complex(2, n_coils, *shape, seed=2, dtype=dtype) if n_coils > 1 else None
    op = NufftOp(traj, shape, smaps=smaps, density=weights, backend="finufft")
    result = assert_normal(op, (2, *shape), seed=3, dtype=dtype, normal=op.weighted_normal,
                           reference=lambda x: op.weighted_adjoint(op.forward(x)), rtol=1e-4)
    assert result.dtype == dtype


def test_unweighted_normal_ignores_density() -> None:
    traj = radial_2d(16, 32)
    weights = torch.rand(traj.shape[1], generator=torch.Generator().manual_seed(4))
    op = NufftOp(traj, (16, 16), density=weights)
    assert_normal(op, (1, 16, 16), seed=5, rtol=1e-4)  # normal is A^H A whatever the density


def test_torchkbnufft_operator_matches_its_toeplitz_normal() -> None:
    traj = radial_2d(24, 32)
    op = NufftOp(traj, (16, 16), smaps=random_complex(1, 2, 16, 16, seed=6), backend="torchkbnufft")
    assert_normal(op, (1, 16, 16), seed=7, rtol=1e-4)


def test_kernel_shape_and_hermitian_symmetry() -> None:
    traj = radial_2d(16, 32)
    kernel = toeplitz_kernel(traj, (16, 16), torch.rand(traj.shape[1]))
    assert kernel.shape == (32, 32) and kernel.dtype == torch.complex64
    assert kernel.imag.abs().max() < 1e-5 * kernel.real.abs().max()  # real weights -> real transfer function


def test_leading_dims_and_jit_script() -> None:
    traj = radial_3d(40, 12)
    kernel = toeplitz_kernel(traj, (6, 8, 10))
    x = random_complex(2, 3, 6, 8, 10, seed=8, dtype=torch.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(toeplitz_apply)
    out = scripted(x, kernel)
    assert out.shape == x.shape
    assert torch.allclose(out, toeplitz_apply(x, kernel))
    assert torch.allclose(out[1, 2], toeplitz_apply(x[1, 2], kernel), atol=1e-6)


def test_kernel_validates_inputs() -> None:
    traj = radial_2d(4, 8)
    with pytest.raises(ValueError, match="trajectory"):
        toeplitz_kernel(traj, (8, 8, 8))
    with pytest.raises(ValueError, match="weights"):
        toeplitz_kernel(traj, (8, 8), torch.ones(3))


def test_chunking_over_leading_images_does_not_change_the_result() -> None:
    traj = radial_2d(16, 32)
    kernel = toeplitz_kernel(traj, (16, 16), torch.rand(traj.shape[1], generator=torch.Generator().manual_seed(9)))
    x = random_complex(2, 5, 16, 16, seed=10, dtype=torch.complex64)
    whole = toeplitz_apply(x, kernel, chunk_elements=1 << 30)
    for chunk_elements in (1, 3 * 32 * 32):  # one image per call; 3 per call with a ragged last chunk
        assert torch.allclose(toeplitz_apply(x, kernel, chunk_elements=chunk_elements), whole, atol=1e-6)
