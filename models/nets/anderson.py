"""Fixed-point solvers for deep equilibrium models: Anderson acceleration and plain iteration, batched.

Both solve ``x = f(x)`` for a batch of tensors ``[B, ...]`` (each example is its own problem: the stopping rule
waits for the worst one). The relative residual of example b is ``||f(x_b) - x_b|| / (||f(x_b)|| + eps)``.
They run eagerly (data-dependent stopping), so networks call them under ``torch.no_grad`` in training only.
Anderson acceleration (type II, Walker & Ni 2011) mixes the last ``memory`` iterates with weights alpha that
minimise ``||sum_i alpha_i (f(x_i) - x_i)||`` subject to ``sum_i alpha_i = 1`` (Tikhonov ``regularisation``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

FixedPointMap = Callable[[torch.Tensor], torch.Tensor]
EPS = 1e-12


@dataclass
class SolverResult:
    """The solution, the number of evaluations of ``f``, the final (worst-example) relative residual and its
    history, one entry per iteration."""

    solution: torch.Tensor
    iterations: int
    residual: float
    history: list[float] = field(default_factory=list)


def relative_residual(fx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-example ``||f(x) - x|| / (||f(x)|| + eps)``, shape ``[B]`` (works for real and complex tensors)."""
    difference = (fx - x).reshape(x.shape[0], -1)
    return torch.linalg.vector_norm(difference, dim=1) / (torch.linalg.vector_norm(fx.reshape(x.shape[0], -1),
                                                                                   dim=1) + EPS)


def _check(max_iterations: int, tolerance: float) -> None:
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")


def fixed_point_iteration(f: FixedPointMap, x0: torch.Tensor, max_iterations: int = 50,
                          tolerance: float = 1e-4) -> SolverResult:
    """Plain iteration ``x <- f(x)`` until the worst relative residual is <= ``tolerance`` or the cap."""
    _check(max_iterations, tolerance)
    x, history = x0, []
    for _ in range(max_iterations):
        fx = f(x)
        history.append(float(relative_residual(fx, x).max()))
        x = fx
        if history[-1] <= tolerance:
            break
    return SolverResult(x, len(history), history[-1], history)


def anderson(f: FixedPointMap, x0: torch.Tensor, memory: int = 5, max_iterations: int = 50,
             tolerance: float = 1e-4, regularisation: float = 1e-4, mixing: float = 1.0) -> SolverResult:
    """Anderson-accelerated fixed-point iteration on a batch ``x0 [B, ...]`` (real or complex).

    ``memory`` past iterates are mixed (``memory=0`` is plain iteration); ``mixing`` (beta) damps the update,
    ``x+ = beta * sum alpha f(x_i) + (1 - beta) * sum alpha x_i``. Stops when the worst example's relative
    residual is <= ``tolerance`` or after ``max_iterations`` evaluations of ``f``; returns the last ``f(x)``.
    """
    _check(max_iterations, tolerance)
    if memory < 0:
        raise ValueError(f"memory must be >= 0, got {memory}")
    if regularisation < 0:
        raise ValueError(f"regularisation must be >= 0, got {regularisation}")
    if not 0 < mixing <= 1:
        raise ValueError(f"mixing must lie in (0, 1], got {mixing}")
    if memory == 0:
        return fixed_point_iteration(f, x0, max_iterations, tolerance)
    batch, shape = x0.shape[0], x0.shape
    as_real = (lambda t: torch.view_as_real(t).reshape(batch, -1)) if x0.is_complex() \
        else (lambda t: t.reshape(batch, -1))
    iterates: list[torch.Tensor] = []  # flattened x_i, [B, n]
    images: list[torch.Tensor] = []  # flattened f(x_i), [B, n]
    x, fx, history = x0, x0, []
    for _ in range(max_iterations):
        fx = f(x)
        history.append(float(relative_residual(fx, x).max()))
        if history[-1] <= tolerance:
            break
        iterates.append(as_real(x))
        images.append(as_real(fx))
        if len(iterates) > memory:
            iterates.pop(0)
            images.pop(0)
        x = _unflatten(_mix(torch.stack(iterates, 1), torch.stack(images, 1), regularisation, mixing), shape, x0)
    return SolverResult(fx, len(history), history[-1], history)


def _mix(iterates: torch.Tensor, images: torch.Tensor, regularisation: float, mixing: float) -> torch.Tensor:
    """Next iterate from ``iterates``/``images`` ``[B, k, n]``: solve the bordered normal equations
    ``[[0, 1^T], [1, G G^T + lambda I]] [nu; alpha] = [1; 0]`` for the weights alpha (in float64)."""
    residuals = (images - iterates).double()  # G, [B, k, n]
    batch, k = residuals.shape[:2]
    gram = residuals @ residuals.transpose(1, 2)  # [B, k, k]
    scale = gram.diagonal(dim1=1, dim2=2).amax(dim=1).clamp_min(EPS)  # regularise relative to the problem's size
    system = torch.zeros(batch, k + 1, k + 1, dtype=torch.float64, device=residuals.device)
    system[:, 0, 1:] = 1.0
    system[:, 1:, 0] = 1.0
    system[:, 1:, 1:] = gram + regularisation * scale[:, None, None] * torch.eye(k, dtype=torch.float64,
                                                                                 device=residuals.device)
    rhs = torch.zeros(batch, k + 1, 1, dtype=torch.float64, device=residuals.device)
    rhs[:, 0] = 1.0
    alpha = torch.linalg.solve(system, rhs)[:, 1:, 0].to(images.dtype)  # [B, k]
    mixed_images = (alpha[:, :, None] * images).sum(1)
    if mixing == 1.0:
        return mixed_images
    return mixing * mixed_images + (1 - mixing) * (alpha[:, :, None] * iterates).sum(1)


def _unflatten(flat: torch.Tensor, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    if like.is_complex():
        return torch.view_as_complex(flat.reshape(*shape, 2).contiguous())
    return flat.reshape(shape)
