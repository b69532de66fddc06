"""Broyden's method for deep-equilibrium fixed points, batched, keeping a low-rank inverse-Jacobian estimate that
the backward pass can share (SHINE), with optional outer-problem-aware (OPA) extra updates.

``broyden`` solves ``x = f(x)`` for a batch ``[B, ...]`` (each example its own problem, as ``anderson`` does) as
the root of ``g(x) = x - f(x)``. Its estimate ``H ~ J_g^{-1} = (I - J_f)^{-1}`` starts at the identity (so the
first step is a plain iteration) and is kept per example as ``H = I + sum_i u_i v_i^T`` (factors U, V
``[B, m, n]``, at most ``memory`` pairs: when full, the estimate restarts from the identity). A step is
``x+ = x - H g(x)``, then "good" Broyden's rank-one update (Broyden 1965) makes ``H+ y = s`` for ``s = x+ - x``,
``y = g(x+) - g(x)``: ``H+ = H + (s - H y) s^T H / (s^T H y)``.

SHINE (Ramzi, Mannel, Bai, Starck, Ciuciu, Moreau, ICLR 2022, "SHINE: SHaring the INverse Estimate from the
forward pass for bi-level optimization and implicit models"): the implicit gradient needs
``v^T (I - J_f(x*))^{-1}`` for the outer-loss gradient v; ``H^T v`` from the stored factors
(``LowRankInverse.rmatvec``) replaces the backward's linear solve.
OPA (the paper's outer-problem awareness; the update follows the authors' DEQ code, ``zaccharieramzi/shine``,
``mdeq_lib/modules/adj_broyden.py``): every ``opa_every`` iterations, and once more at the last iterate, one
extra update of H in the direction of the outer-loss gradient ``sigma = dL/dx``. With ``tau = H^T sigma`` (the
SHINE direction) and ``r = J_g^T tau`` (one vector-Jacobian product of f), the adjoint ("left") secant condition
``H+^T r = tau`` is imposed by ``H+ = H + (H tau)(tau - H^T r)^T / (r^T H tau)`` (good Broyden on the transposed
system), so that H is exact to first order where the backward pass applies it. Unlike the authors' code, the
OPA pairs are kept apart from the ones Broyden's steps use (H = I + forward pairs + OPA pairs for the backward;
the steps use I + forward pairs), so the forward iterates are exactly plain Broyden's. Mixed into the steps, a
DEQ training run here diverged within tens of steps (at Adam 1e-3; kept apart, SHINE + OPA training also
diverged there later, so the mixing is not proven the only cause); on the DEQ's gradients at its initial weights
both gave cosines 0.98-1.0 with the exact one (bench/shine.py: 0.89 at trained weights), while on a symmetric linear
map the mixed form was far more accurate (see
tests/nets/test_broyden.py). The paper's own text was not in the reference corpus searched for this module; the
authors' code was.
The solver runs eagerly (data-dependent stopping): networks call it under ``torch.no_grad`` in training only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mrdserve.models.nets.anderson import EPS, FixedPointMap, SolverResult, relative_residual

OuterLoss = Callable[[torch.Tensor], torch.Tensor]
CURVATURE_EPS = 1e-10  # an update whose denominator is below this times the norms it divides is skipped


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """``[B, ...]`` (complex as its real and imaginary parts) -> real ``[B, n]``."""
    return (torch.view_as_real(x) if x.is_complex() else x).reshape(x.shape[0], -1)


def _unflatten(flat: torch.Tensor, shape: torch.Size, is_complex: bool) -> torch.Tensor:
    if is_complex:
        return torch.view_as_complex(flat.reshape(*shape, 2).contiguous())
    return flat.reshape(shape)


@dataclass
class LowRankInverse:
    """``H = I + sum_i u_i v_i^T`` per example, ``us``/``vs`` ``[B, m, n]`` on the flattened real view of a
    tensor of ``shape`` (complex tensors as their real and imaginary parts), approximating ``(I - J_f)^{-1}``."""

    us: torch.Tensor
    vs: torch.Tensor
    shape: torch.Size
    is_complex: bool

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``H x`` (an estimate of ``(I - J_f)^{-1} x``), ``x`` shaped like the solution."""
        flat = _flatten(x)
        product = torch.einsum("bmn,bm->bn", self.us, torch.einsum("bmn,bn->bm", self.vs, flat))
        return _unflatten(flat + product, self.shape, self.is_complex)

    def rmatvec(self, x: torch.Tensor) -> torch.Tensor:
        """``H^T x`` (an estimate of ``(I - J_f)^{-T} x``: SHINE's backward direction)."""
        flat = _flatten(x)
        product = torch.einsum("bmn,bm->bn", self.vs, torch.einsum("bmn,bn->bm", self.us, flat))
        return _unflatten(flat + product, self.shape, self.is_complex)

    def dense(self) -> torch.Tensor:
        """``H`` as matrices ``[B, n, n]`` (for checks on small problems)."""
        n = self.us.shape[-1]
        return torch.eye(n, dtype=self.us.dtype, device=self.us.device) + self.us.transpose(1, 2) @ self.vs


@dataclass
class BroydenResult(SolverResult):
    """``SolverResult`` plus the inverse estimate at the last iterate and the number of OPA updates made (each
    cost one more evaluation of f with its vector-Jacobian product and one gradient of the outer loss, not
    counted in ``iterations``)."""

    inverse: LowRankInverse | None = None
    opa_updates: int = 0


class _Factors:
    """Store of the rank-one pairs; once ``memory`` are held, the next pair restarts it from the identity.
    (Overwriting only the oldest pair, as limited-memory codes do, leaves the others inconsistent, as each was
    computed against the matrix that held it, and diverged on a linear test problem.)"""

    def __init__(self, batch: int, n: int, memory: int, like: torch.Tensor) -> None:
        self.us = like.new_zeros(batch, memory, n)
        self.vs = like.new_zeros(batch, memory, n)
        self.memory, self.count = memory, 0

    def product(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``sum_i u_i v_i^T x`` (``transpose``: ``sum_i v_i u_i^T x``) for ``x [B, n]``."""
        us, vs = self.us[:, :self.count], self.vs[:, :self.count]
        if transpose:
            us, vs = vs, us
        return torch.einsum("bmn,bm->bn", us, torch.einsum("bmn,bn->bm", vs, x))

    def add(self, u: torch.Tensor, v: torch.Tensor, keep: torch.Tensor) -> None:
        """Store ``u v^T`` for the examples where ``keep`` (``[B]`` bool) holds, a zero pair elsewhere."""
        if not bool(keep.any()):
            return
        if self.count == self.memory:
            self.us.zero_()
            self.vs.zero_()
            self.count = 0
        self.us[:, self.count] = torch.where(keep[:, None], u, torch.zeros_like(u))
        self.vs[:, self.count] = torch.where(keep[:, None], v, torch.zeros_like(v))
        self.count += 1


def _apply(stores: list[_Factors], x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``H x`` (or ``H^T x``) for ``H = I +`` the pairs of ``stores``."""
    return x + sum(store.product(x, transpose) for store in stores)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=1)


def _safe_pair(u: torch.Tensor, v_numerator: torch.Tensor, denominator: torch.Tensor, scale: torch.Tensor,
               active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(u, v_numerator / denominator, keep)``: keep where active, finite and ``|denominator| > eps * scale``."""
    keep = active & (denominator.abs() > CURVATURE_EPS * scale) & torch.isfinite(denominator)
    v = v_numerator / torch.where(keep, denominator, torch.ones_like(denominator))[:, None]
    keep = keep & torch.isfinite(u).all(dim=1) & torch.isfinite(v).all(dim=1)
    return u, v, keep


def broyden(f: FixedPointMap, x0: torch.Tensor, memory: int = 30, max_iterations: int = 50,
            tolerance: float = 1e-4, outer_loss: OuterLoss | None = None, opa_every: int = 0) -> BroydenResult:
    """Good Broyden on ``x = f(x)`` for a batch ``x0 [B, ...]`` (real or complex), inverse estimate kept.

    Stops when the worst example's relative residual ``||f(x) - x|| / ||f(x)||`` is <= ``tolerance`` or after
    ``max_iterations`` evaluations of ``f``; examples already within tolerance stop moving (and updating) while
    the others go on. ``memory`` caps the rank-one pairs of the steps (all OPA pairs are kept). With ``outer_loss``
    (a scalar function of a batch shaped like ``x0``) and ``opa_every`` > 0, every ``opa_every``-th iteration
    and the last iterate add one OPA update along ``d outer_loss / dx`` (module docstring); that needs ``f``
    differentiable in autograd. Returns the last ``f(x)`` and the estimate ``H`` at the last iterate.
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if memory < 1:
        raise ValueError(f"memory must be >= 1, got {memory}")
    if opa_every < 0:
        raise ValueError(f"opa_every must be >= 0, got {opa_every}")
    if opa_every > 0 and outer_loss is None:
        raise ValueError("opa_every > 0 needs outer_loss (the outer problem's loss as a function of x)")
    shape, batch, is_complex = x0.shape, x0.shape[0], x0.is_complex()

    def unflatten(flat: torch.Tensor) -> torch.Tensor:
        return _unflatten(flat, shape, is_complex)

    def flat_f(flat: torch.Tensor) -> torch.Tensor:
        return _flatten(f(unflatten(flat)))

    x = _flatten(x0)
    forward = _Factors(batch, x.shape[1], memory, x)  # the estimate Broyden's steps use
    # OPA's corrections, for the backward only: room for all of them (one per opa_every iterations, one at the end)
    extra = _Factors(batch, x.shape[1], max_iterations // opa_every + 1 if opa_every else 1, x)
    both = [forward, extra]
    fx = flat_f(x)
    residuals = relative_residual(fx, x)
    history = [float(residuals.max())]
    opa_updates = 0
    while history[-1] > tolerance and len(history) < max_iterations:
        active = residuals > tolerance
        if opa_every > 0 and len(history) % opa_every == 0:
            opa_updates += _opa_update(flat_f, outer_loss, unflatten, both, extra, x, active)
        g = x - fx
        x_next = torch.where(active[:, None], x - _apply([forward], g), x)
        fx_next = flat_f(x_next)
        s, y = x_next - x, (x_next - fx_next) - g
        h_y = _apply([forward], y)
        v_numerator = _apply([forward], s, transpose=True)  # H^T s
        denominator = _dot(v_numerator, y)  # s^T H y
        scale = torch.linalg.vector_norm(s, dim=1) * torch.linalg.vector_norm(h_y, dim=1) + EPS
        forward.add(*_safe_pair(s - h_y, v_numerator, denominator, scale, active))
        x, fx = x_next, fx_next
        residuals = relative_residual(fx, x)
        history.append(float(residuals.max()))
    if opa_every > 0:  # once more where the backward will use the estimate
        everyone = torch.ones_like(residuals, dtype=torch.bool)
        opa_updates += _opa_update(flat_f, outer_loss, unflatten, both, extra, x, everyone)
    us = torch.cat([store.us[:, :store.count] for store in both], dim=1)
    vs = torch.cat([store.vs[:, :store.count] for store in both], dim=1)
    return BroydenResult(unflatten(fx), len(history), history[-1], history,
                         LowRankInverse(us, vs, shape, is_complex), opa_updates)


def _opa_update(flat_f: FixedPointMap, outer_loss: OuterLoss, unflatten: Callable[[torch.Tensor], torch.Tensor],
                stores: list[_Factors], extra: _Factors, x: torch.Tensor, active: torch.Tensor) -> int:
    """One OPA update at ``x``: impose ``H+^T r = tau`` on ``H = I + stores`` for ``tau = H^T dL/dx``
    (normalised per example) and ``r = J_g^T tau``, the pair going to ``extra``; 1 if any example was updated."""
    with torch.enable_grad():
        point = x.detach().requires_grad_()
        (sigma,) = torch.autograd.grad(outer_loss(unflatten(point)), point)
        tau = _apply(stores, sigma, transpose=True)
        tau = tau / (torch.linalg.vector_norm(tau, dim=1, keepdim=True) + EPS)
        (jf_tau,) = torch.autograd.grad(flat_f(point), point, tau)
    r = tau - jf_tau  # J_g^T tau, J_g = I - J_f
    h_tau = _apply(stores, tau)
    denominator = _dot(r, h_tau)  # r^T H tau
    scale = torch.linalg.vector_norm(r, dim=1) * torch.linalg.vector_norm(h_tau, dim=1) + EPS
    u, v, keep = _safe_pair(h_tau, tau - _apply(stores, r, transpose=True), denominator, scale, active)
    extra.add(u, v, keep)
    return int(bool(keep.any()))
