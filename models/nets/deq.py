"""Deep equilibrium network for Cartesian (multi- or single-coil) MRI, trained with Jacobian-free backprop, implicit
differentiation or SHINE.

The reconstruction is the fixed point x* = T(x*) of a learned gradient step (Liu, Tong, Zhao; Fung et al. 2022)

    T(x) = x - eta (A^H (A x - y) + S(x)),      S(x) = x - D(x),

with A the SENSE operator (mask, centred orthonormal FFT, sensitivities), x0 = A^H y and D a small CNN on the
real/imaginary channels (a learned denoiser, so S is the residual of a denoiser as in RED). With spectral
normalisation each conv has unit spectral norm (of its reshaped weight, which approximates the conv's operator
norm), so D is about 1-Lipschitz; eta = eta_max * sigmoid(eta_raw) stays in (0, 2/3], and for ||A|| <= 1
(RSS-normalised sensitivities) T is then a contraction with factor <= 1 - eta (1 - Lip(D)) when Lip(D) < 1.

Training forward (``self.training``): the fixed point is solved without a graph to a relative-residual
``tolerance`` (at most ``max_iterations``) by Anderson acceleration or Broyden's method (``solver``), then T is
applied ONCE with a graph at the fixed point. What the backward does with the incoming gradient g = dL/dx
(``backprop``):
  "jfb"          nothing: Jacobian-free backprop (Fung et al. 2022), u = g;
  "exact"        implicit differentiation: u solves u = J_T^T u + g, i.e. (I - J_T^T) u = g, iterated
                 (Anderson on the vector-Jacobian products) to ``backward_tolerance`` or
                 ``backward_max_iterations``;
  "shine"        SHINE (Ramzi et al., ICLR 2022): u = H^T g with Broyden's inverse estimate H ~ (I - J_T)^{-1}
                 of the forward pass, from its stored factors (no solve);
  "shine-refine" the exact backward's iteration started from the SHINE direction, at most
                 ``refine_iterations`` iterations;
and u then flows through the one differentiable application of T to the parameters (dL/dtheta = u^T dT/dtheta).
``backprop="full"`` differentiates through ``max_iterations`` plain iterations instead (for comparisons).
``opa_every`` > 0 adds Broyden's OPA updates along the outer-loss gradient (``models.nets.broyden``); they need
``model.outer_loss`` (the training loss as a function of the network's output ``[B, y, x]``), set before each
training forward and consumed by it. ``last_stats`` holds the forward iterations and residual, and after the
backward of "exact"/"shine-refine" its iterations and residual (``backward_iterations``, ``backward_residual``;
"shine": ``backward_iterations`` = 0).
Eval/export forward: exactly ``export_iterations`` plain iterations from x0, no data-dependent stopping, so it
scripts and exports; ``export_iterations`` is a constructor kwarg and so is recorded in the artifact manifest's
network kwargs. Output: |x|.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as spectral_normalise

from mrdserve.models.nets.anderson import SolverResult, anderson
from mrdserve.models.nets.broyden import BroydenResult, broyden
from mrdserve.models.nets.complex import channels_to_complex, complex_to_channels, magnitude, real_to_complex
from mrdserve.models.physics.kernels import sense_gradient, sense_reduce

ETA_MAX = 2.0 / 3.0  # largest step for which (1 - eta) I - eta A^H A has norm <= 1 - eta when ||A|| <= 1
BACKPROP_MODES = ("jfb", "full", "exact", "shine", "shine-refine")
SOLVERS = ("auto", "anderson", "broyden")  # auto: Broyden where SHINE or OPA needs its estimate, else Anderson


class Denoiser(nn.Module):
    """D(x) = a x + (1 - a) N(x): N is ``n_layers`` 3x3 convs (ReLU between) on ``[B, 2, y, x]`` real/imaginary
    channels, optionally each spectrally normalised (torch's power-iteration parametrisation), a = sigmoid(learned)
    in (0, 1). A convex combination keeps D ~1-Lipschitz when N is, and the skip lets D start near the identity,
    which a unit-norm CNN alone reaches only slowly (training stalled without it)."""

    def __init__(self, n_filters: int = 32, n_layers: int = 4, spectral_norm: bool = True,
                 skip_init: float = 0.5) -> None:
        super().__init__()
        if n_layers < 2 or n_filters < 1:
            raise ValueError(f"n_layers must be >= 2 and n_filters >= 1, got {n_layers} and {n_filters}")
        widths = [2] + [n_filters] * (n_layers - 1) + [2]
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            conv = nn.Conv2d(width_in, width_out, 3, padding=1)
            layers.append(spectral_normalise(conv) if spectral_norm else conv)
            if index < n_layers - 1:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)
        self.skip_raw = nn.Parameter(torch.tensor(skip_init).logit())
        self.n_filters, self.n_layers, self.spectral_norm = n_filters, n_layers, spectral_norm

    def without_parametrisation(self) -> Denoiser:
        """A plain copy computing the same map in eval mode (the normalised weights baked in), for scripting."""
        plain = Denoiser(self.n_filters, self.n_layers, spectral_norm=False)
        was_training = self.training
        plain.skip_raw.data.copy_(self.skip_raw.detach())
        self.eval()  # reading a spectral-normalised weight in training mode would run a power iteration
        with torch.no_grad():
            for source, target in zip(self.layers, plain.layers, strict=True):
                if isinstance(target, nn.Conv2d):
                    target.weight.copy_(source.weight)
                    target.bias.copy_(source.bias)
        self.train(was_training)
        first = next(self.parameters())
        return plain.to(device=first.device, dtype=first.dtype).train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = torch.sigmoid(self.skip_raw)
        return skip * x + (1 - skip) * self.layers(x)


class _ImplicitGradient(torch.autograd.Function):
    """Identity whose backward replaces the incoming gradient g by ``adjoint(g)`` (the implicit-differentiation
    solve or its SHINE estimate); the differentiable application of T upstream carries it to the parameters."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, adjoint: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.adjoint = adjoint
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        adjoint, ctx.adjoint = ctx.adjoint, None  # drop the references to the graph as soon as it is used
        return adjoint(grad), None


class DEQ(nn.Module):
    """Fixed-point (deep equilibrium) network trained with JFB, implicit differentiation or SHINE.

    ``forward(kspace [B, C, ky, kx, 2], mask [B, 1, ky, kx] float, smaps [B, C, ky, kx, 2]) -> [B, ky, kx]``.

    Args:
        n_filters, n_layers, spectral_norm: the denoiser D (see ``Denoiser``).
        step_size: initial eta in (0, 2/3]; ``learn_step_size`` makes it a parameter (else a fixed buffer).
        max_iterations, tolerance: training solver cap and relative-residual tolerance (``tolerance=0`` runs
            the cap); with ``backprop="full"``, ``max_iterations`` is the number of differentiated iterations.
        anderson_memory, anderson_regularisation: Anderson acceleration (memory 0 = plain iteration), forward
            and (for "exact"/"shine-refine") backward.
        export_iterations: plain iterations of the eval/export forward (recorded in the manifest's kwargs).
        backprop: "jfb", "full", "exact", "shine" or "shine-refine" (module docstring).
        solver: forward solver, "anderson", "broyden" or "auto" (Broyden for the SHINE modes and OPA, which
            need its inverse estimate; Anderson otherwise).
        broyden_memory: rank-one pairs Broyden keeps (its inverse estimate's rank cap).
        backward_max_iterations, backward_tolerance: the "exact" backward's cap and relative-residual tolerance.
        refine_iterations: the "shine-refine" backward's cap (same tolerance).
        opa_every: OPA update every this many Broyden iterations (0: none); needs ``outer_loss`` set.
    """

    def __init__(self, n_filters: int = 32, n_layers: int = 4, spectral_norm: bool = True, step_size: float = 0.5,
                 learn_step_size: bool = True, max_iterations: int = 30, tolerance: float = 1e-3,
                 anderson_memory: int = 5, anderson_regularisation: float = 1e-4, export_iterations: int = 20,
                 backprop: str = "jfb", solver: str = "auto", broyden_memory: int = 30,
                 backward_max_iterations: int = 50, backward_tolerance: float = 1e-4, refine_iterations: int = 5,
                 opa_every: int = 0) -> None:
        super().__init__()
        if not 0 < step_size <= ETA_MAX:
            raise ValueError(f"step_size must lie in (0, {ETA_MAX:.4f}], got {step_size}")
        if max_iterations < 1 or export_iterations < 1:
            raise ValueError(f"max_iterations and export_iterations must be >= 1, got {max_iterations} and "
                             f"{export_iterations}")
        if backprop not in BACKPROP_MODES:
            raise ValueError(f"backprop must be one of {', '.join(BACKPROP_MODES)}, got {backprop!r}")
        if tolerance < 0 or anderson_memory < 0 or anderson_regularisation < 0:
            raise ValueError("tolerance, anderson_memory and anderson_regularisation must be >= 0")
        self.solver = self._resolve_solver(solver, backprop, opa_every)
        if broyden_memory < 1 or backward_max_iterations < 1 or refine_iterations < 1:
            raise ValueError(f"broyden_memory, backward_max_iterations and refine_iterations must be >= 1, got "
                             f"{broyden_memory}, {backward_max_iterations} and {refine_iterations}")
        if backward_tolerance < 0:
            raise ValueError(f"backward_tolerance must be >= 0, got {backward_tolerance}")
        self.denoiser = Denoiser(n_filters, n_layers, spectral_norm)
        fraction = min(step_size / ETA_MAX, 1.0 - 1e-6)
        raw = torch.logit(torch.tensor(fraction, dtype=torch.float32))
        if learn_step_size:
            self.eta_raw = nn.Parameter(raw)
        else:
            self.register_buffer("eta_raw", raw)
        self.eta_max = ETA_MAX
        self.max_iterations, self.tolerance = max_iterations, tolerance
        self.anderson_memory, self.anderson_regularisation = anderson_memory, anderson_regularisation
        self.export_iterations = export_iterations
        self.backprop = backprop
        self.broyden_memory, self.opa_every = broyden_memory, opa_every
        self.backward_max_iterations, self.backward_tolerance = backward_max_iterations, backward_tolerance
        self.refine_iterations = refine_iterations
        self.outer_loss = None  # OPA: loss of the output [B, y, x] -> scalar, set before a training forward
        self.last_stats = {}  # {"forward_iterations": int, "residual": float, ...}, set by training passes

    @staticmethod
    def _resolve_solver(solver: str, backprop: str, opa_every: int) -> str:
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        if opa_every < 0:
            raise ValueError(f"opa_every must be >= 0, got {opa_every}")
        if opa_every > 0 and backprop == "full":
            raise ValueError("opa_every > 0 needs a fixed-point solve: not with backprop='full'")
        needs_broyden = backprop.startswith("shine") or opa_every > 0
        if solver == "anderson" and needs_broyden:
            raise ValueError(f"backprop={backprop!r} with opa_every={opa_every} needs solver='broyden' (or 'auto'): "
                             "SHINE and OPA use Broyden's inverse estimate")
        if solver == "auto":
            return "broyden" if needs_broyden else "anderson"
        return solver

    def step_size(self) -> torch.Tensor:
        """eta = (2/3) sigmoid(eta_raw), in (0, 2/3]."""
        return self.eta_max * torch.sigmoid(self.eta_raw)

    def operator(self, x: torch.Tensor, measured: torch.Tensor, smaps: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
        """T on the real channels ``[B, 2, y, x]`` of the image: x - eta (A^H(Ax - y) + x - D(x))."""
        image = channels_to_complex(x)
        gradient = complex_to_channels(sense_gradient(image, measured, smaps, mask))
        return x - self.step_size() * (gradient + x - self.denoiser(x))

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor) -> torch.Tensor:
        measured = real_to_complex(kspace)
        smaps_c = real_to_complex(smaps)
        x = complex_to_channels(sense_reduce(measured, smaps_c, mask))
        if self.training:
            x = self._train_forward(x, measured, smaps_c, mask)
        else:
            for _ in range(self.export_iterations):
                x = self.operator(x, measured, smaps_c, mask)
        return magnitude(channels_to_complex(x)).squeeze(1)

    @torch.jit.unused
    def _train_forward(self, x0, measured, smaps, mask):  # unannotated: jit.unused cannot read string annotations
        """Training: solve without a graph and apply T once with one (JFB, and the implicit modes' hook), or
        differentiate every iteration. All arguments and the result are tensors; TorchScript reads them as such
        from the missing annotations."""
        outer_loss = self._consume_outer_loss()
        if self.backprop == "full":
            x = x0
            for _ in range(self.max_iterations):
                x = self.operator(x, measured, smaps, mask)
            with torch.no_grad():
                residual = float((self.operator(x, measured, smaps, mask) - x).norm() / x.norm().clamp_min(1e-12))
            self.last_stats = {"forward_iterations": self.max_iterations, "residual": residual}
            return x
        operator = functools.partial(self.operator, measured=measured, smaps=smaps, mask=mask)
        solved = self._solve(operator, x0, outer_loss)
        self.last_stats = {"forward_iterations": solved.iterations, "residual": solved.residual}
        if self.backprop == "jfb":
            return operator(solved.solution.detach())
        point = solved.solution.detach().requires_grad_()
        output = operator(point)
        return _ImplicitGradient.apply(output, functools.partial(self._adjoint, output, point, solved))

    def _solve(self, operator: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor,
               outer_loss: Callable[[torch.Tensor], torch.Tensor] | None) -> SolverResult:
        """The fixed point of ``operator`` from ``x0``, without a graph (Broyden, with OPA's ``outer_loss``, or
        Anderson)."""
        with torch.no_grad():
            if self.solver == "broyden":
                return broyden(operator, x0, memory=self.broyden_memory, max_iterations=self.max_iterations,
                               tolerance=self.tolerance, outer_loss=outer_loss, opa_every=self.opa_every)
            return anderson(operator, x0, memory=self.anderson_memory, max_iterations=self.max_iterations,
                            tolerance=self.tolerance, regularisation=self.anderson_regularisation)

    def _consume_outer_loss(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """OPA's outer loss as a function of the channels x (through |x|), read once and cleared."""
        loss, self.outer_loss = self.outer_loss, None
        if self.opa_every == 0:
            return None
        if loss is None:
            raise ValueError("opa_every > 0: set model.outer_loss (the training loss of the output [B, y, x]) "
                             "before each training forward")
        return lambda x: loss(magnitude(channels_to_complex(x)).squeeze(1))

    def _adjoint(self, output: torch.Tensor, point: torch.Tensor, solved: SolverResult,
                 grad: torch.Tensor) -> torch.Tensor:
        """u from g = dL/d output at the fixed point ``point`` (``output`` = T(point), with its graph)."""
        if self.backprop == "shine":
            self.last_stats["backward_iterations"] = 0
            return self._shine_direction(solved, grad)

        def equation(u: torch.Tensor) -> torch.Tensor:  # u -> J_T^T u + g
            (vjp,) = torch.autograd.grad(output, point, u, retain_graph=True)
            return vjp + grad

        if self.backprop == "shine-refine":
            start, cap = self._shine_direction(solved, grad), self.refine_iterations
        else:
            start, cap = grad, self.backward_max_iterations
        result = anderson(equation, start, memory=self.anderson_memory, max_iterations=cap,
                          tolerance=self.backward_tolerance, regularisation=self.anderson_regularisation)
        self.last_stats["backward_iterations"] = result.iterations
        self.last_stats["backward_residual"] = result.residual
        return result.solution

    @staticmethod
    def _shine_direction(solved: SolverResult, grad: torch.Tensor) -> torch.Tensor:
        """H^T g from Broyden's factors: SHINE's estimate of (I - J_T^T)^{-1} g."""
        if not isinstance(solved, BroydenResult) or solved.inverse is None:
            raise RuntimeError("SHINE needs the forward solve's Broyden inverse estimate")
        return solved.inverse.rmatvec(grad)

    def __prepare_scriptable__(self) -> DEQ:
        """TorchScript cannot compile torch's spectral-norm parametrisation: script a copy whose denoiser is a
        plain one holding the current normalised weights (eval mode runs no power iteration: same outputs)."""
        if not self.denoiser.spectral_norm and self.outer_loss is None:
            return self
        scriptable = copy.deepcopy(self)
        scriptable.outer_loss = None
        if self.denoiser.spectral_norm:
            scriptable.denoiser = self.denoiser.without_parametrisation()
        scriptable.last_stats = {}
        return scriptable
