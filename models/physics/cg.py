"""Batched complex conjugate gradient for Hermitian positive (semi-)definite normal equations.

Solves (N + l2 I) x = b independently for every batch element (dim 0): inner products, step sizes and
convergence are per sample, so one badly conditioned sample never holds the others back or pollutes them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample real part of <a, b> = sum conj(a) b over all but the batch dimension, shape [B]."""
    return (a.conj() * b).real.reshape(a.shape[0], -1).sum(dim=1)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def conjugate_gradient_with_history(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    n_iter: int = 10,
    tol: float = 1e-6,
    l2: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CG solution and relative residual norms ``[iterations + 1, B]`` (||r_k|| / ||b||)."""
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")

    def operator(v: torch.Tensor) -> torch.Tensor:
        out = normal(v)
        return out + l2 * v if l2 > 0 else out

    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - operator(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rs = _dot(r, r)
    rhs_norm = _dot(rhs, rhs).sqrt().clamp_min(torch.finfo(rs.dtype).tiny)
    history = [rs.sqrt() / rhs_norm]
    for _ in range(n_iter):
        active = history[-1] > tol
        if not bool(active.any()):
            break
        Ap = operator(p)
        pAp = _dot(p, Ap)
        alpha = torch.where(active & (pAp > 0), rs / torch.where(pAp > 0, pAp, 1.0), 0.0)
        x = x + _per_sample(alpha, x) * p
        r = r - _per_sample(alpha, r) * Ap
        rs_new = _dot(r, r)
        beta = torch.where(active & (rs > 0), rs_new / torch.where(rs > 0, rs, 1.0), 0.0)
        p = r + _per_sample(beta, p) * p
        rs = torch.where(active, rs_new, rs)
        history.append(rs.sqrt() / rhs_norm)
    return x, torch.stack(history)


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    n_iter: int = 10,
    tol: float = 1e-6,
    l2: float = 0.0,
) -> torch.Tensor:
    """Solve (normal + l2 I) x = rhs per batch element with at most ``n_iter`` CG iterations."""
    return conjugate_gradient_with_history(normal, rhs, x0=x0, n_iter=n_iter, tol=tol, l2=l2)[0]
