"""Fixed-point solvers: Anderson acceleration reaches the solution of a linear contraction in fewer iterations
than plain iteration, batched (real and complex), and rejects bad settings."""

from __future__ import annotations

import pytest
import torch

from mrdserve.models.nets.anderson import anderson, fixed_point_iteration, relative_residual


def _linear_contraction(batch: int = 3, n: int = 40, rate: float = 0.95, seed: int = 0):
    """f(x) = M x + b per example, M symmetric with eigenvalues in [0, rate]; returns f and the exact fixed point."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(batch, n, n, generator=g, dtype=torch.float64))
    eigenvalues = torch.linspace(0, rate, n, dtype=torch.float64)
    m = q @ torch.diag_embed(eigenvalues.expand(batch, n)) @ q.transpose(1, 2)
    b = torch.randn(batch, n, generator=g, dtype=torch.float64)
    exact = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - m, b)

    def f(x: torch.Tensor) -> torch.Tensor:
        return (m @ x.unsqueeze(-1)).squeeze(-1) + b

    return f, exact


def test_anderson_needs_fewer_iterations_than_plain_iteration_for_the_same_tolerance():
    f, exact = _linear_contraction()
    x0 = torch.zeros_like(exact)
    plain = fixed_point_iteration(f, x0, max_iterations=1000, tolerance=1e-6)
    accelerated = anderson(f, x0, memory=5, max_iterations=1000, tolerance=1e-6)
    assert accelerated.residual <= 1e-6 and plain.residual <= 1e-6
    assert accelerated.iterations * 3 < plain.iterations  # measured: 43 vs 209 iterations
    for result in (plain, accelerated):
        error = torch.linalg.vector_norm(result.solution - exact) / torch.linalg.vector_norm(exact)
        assert error < 1e-4
    assert len(accelerated.history) == accelerated.iterations
    assert accelerated.history[-1] == accelerated.residual


def test_anderson_on_complex_batches_matches_each_problem():
    f_real, exact = _linear_contraction(batch=2, n=20, rate=0.9, seed=1)
    # a complex problem made of two real ones (real and imaginary parts of each example)
    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.complex(f_real(z.real), f_real(z.imag) - f_real(torch.zeros_like(z.imag)) + 0.5)

    x0 = torch.zeros(2, 20, dtype=torch.complex128)
    result = anderson(f, x0, memory=4, max_iterations=200, tolerance=1e-8)
    assert result.solution.dtype == torch.complex128 and result.solution.shape == (2, 20)
    assert float(relative_residual(f(result.solution), result.solution).max()) < 1e-6
    assert torch.allclose(result.solution.real, exact, atol=1e-6)


def test_memory_zero_is_plain_iteration_and_the_cap_is_respected():
    f, exact = _linear_contraction(batch=1, n=10)
    x0 = torch.zeros_like(exact)
    assert torch.equal(anderson(f, x0, memory=0, max_iterations=7, tolerance=0).solution,
                       fixed_point_iteration(f, x0, max_iterations=7, tolerance=0).solution)
    capped = anderson(f, x0, memory=3, max_iterations=4, tolerance=0.0)
    assert capped.iterations == 4 and capped.residual > 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"memory": -1}, "memory"), ({"max_iterations": 0}, "max_iterations"), ({"tolerance": -1.0}, "tolerance"),
    ({"regularisation": -1.0}, "regularisation"), ({"mixing": 0.0}, "mixing"),
])
def test_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        anderson(lambda x: x, torch.zeros(1, 3), **kwargs)
