"""Shared checks for the operator tests: seeded random complex tensors, the adjoint (dot-product) test and the
normal-operator test; tests import them (``from tests.physics.conftest import assert_adjoint``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mrdserve.models.physics.linop import LinearOperator

TensorMap = Callable[[torch.Tensor], torch.Tensor]


def random_complex(*shape: int, seed: int, dtype: torch.dtype = torch.complex128) -> torch.Tensor:
    """Standard complex normal values of ``shape`` from a generator seeded with ``seed`` (CPU)."""
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||."""
    return float((actual - expected).norm() / expected.norm())


def assert_adjoint(op: LinearOperator, x_shape: Sequence[int], y_shape: Sequence[int], *, seed: int = 0,
                   dtype: torch.dtype = torch.complex128, rtol: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Dot-product test <A x, y> = <x, A^H y> on random x (seed ``seed``) and y (seed ``seed + 1``).

    Returns (x, y) for further checks.
    """
    x = random_complex(*x_shape, seed=seed, dtype=dtype)
    y = random_complex(*y_shape, seed=seed + 1, dtype=dtype)
    lhs = torch.vdot(op.forward(x).reshape(-1), y.reshape(-1))
    rhs = torch.vdot(x.reshape(-1), op.adjoint(y).reshape(-1))
    error = float(abs(lhs - rhs) / abs(lhs))
    assert error < rtol, f"<A x, y> and <x, A^H y> differ by {error:.2e} (relative), tolerance {rtol:.0e}"
    return x, y


def assert_normal(op: LinearOperator, x_shape: Sequence[int], *, seed: int = 0,
                  dtype: torch.dtype = torch.complex128, normal: TensorMap | None = None,
                  reference: TensorMap | None = None, rtol: float | None = None,
                  atol: float | None = None) -> torch.Tensor:
    """``normal(x)`` (default ``op.normal``) equals ``reference(x)`` (default ``op.adjoint(op.forward(x))``).

    ``rtol`` bounds the relative error in norm; ``atol`` asks for elementwise closeness (``torch.allclose``).
    Returns ``normal(x)``.
    """
    if rtol is None and atol is None:
        raise ValueError("assert_normal needs rtol or atol")
    x = random_complex(*x_shape, seed=seed, dtype=dtype)
    result = (normal or op.normal)(x)
    expected = reference(x) if reference is not None else op.adjoint(op.forward(x))
    assert result.shape == expected.shape, f"normal gives {tuple(result.shape)}, expected {tuple(expected.shape)}"
    if rtol is not None:
        error = relative_error(result, expected)
        assert error < rtol, f"normal operator differs from its reference by {error:.2e} (relative)"
    if atol is not None:
        assert torch.allclose(result, expected, atol=atol), "normal operator differs from its reference"
    return result
