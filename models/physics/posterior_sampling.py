"""Posterior sampling p(x | y) ∝ p(y | x) p(x) for MRI with a learned score prior, by annealed HMC.

Ramzi, Remy, Lanusse, Starck, Ciuciu, "Denoising score-matching for uncertainty quantification in inverse
problems" (NeurIPS 2020 workshop; thesis ch. 6.2). What we follow, from the paper and its reference code
(github.com/b-remy/score-estimation-comparison, branch mri-recon, ``nsec/mri/tempered_sampling_reconstruction.py``
with ``nsec/tempered_sampling.py`` and ``nsec/samplers.py``):

- chains start at the zero-filled image plus white noise of the largest level: x0 = A^H y + sigma_max eps;
- the prior score is that of the images smoothed at a noise level sigma that decreases geometrically; the
  likelihood is annealed with it: ||A x - y||^2 / (2 (sigma_n^2 + sigma^2)), which is the spec's
  ||A x - y||^2 / (2 sigma_n^2) at sigma -> 0 (sigma_n is the noise std of each real component of k-space);
- each level runs HMC moves with 3 leapfrog steps (the paper's ``num_leapfrog_steps=3``) of step size
  eps (sigma / sigma_max)^nu (the reference's ``eps * (sigma / sigma_init) ** nu``, nu = 1.5 there), with a
  Metropolis-Hastings correction whose prior log-density difference is the score integrated along the
  straight path by Simpson's rule on 4 intervals (``num_delta_logp_steps=4``); the data term is exact;
- the last step is the expected denoised sample (Tweedie): x + sigma_min^2 s(x, sigma_min) (``projection``).

Where we differ (CPU budget of a served request): the reference lowers the temperature by gamma = 0.995 after
every accepted move once 2 moves were made at it (thousands of moves); here the schedule is a fixed geometric
list of ``n_levels`` levels with ``steps_per_level`` moves each, so the cost is known in advance and ``progress``
reports levels; and nu = 1 by default (at 40 levels x 2 moves nu = 1.5 lost 1.4 dB on a held-out 96x96 8-coil
R=4 slice, 26.7 against 28.1 dB). Defaults are in ``SamplerSettings``; the artifact manifest records the settings
it was validated with. With the exact score of a Gaussian prior the samples reproduce the analytic posterior's mean
and variance (tests/physics/test_posterior_sampling.py).

Noise: ``noise_std`` is the std of each real component of the prepared k-space noise. For prewhitened data (unit
complex variance per sample) that is 1 / (sqrt(2) scale) with the preparation's ``scale``; without it the sampler
estimates it from the outer readout samples (``noise_level.kspace_noise_variance``), which fine image detail there
inflates (about 3x on 64x64 phantoms), weakening the data term.

Likelihood operators, from the same prepared inputs the networks get (``models.data.prepare``):
"cartesian-sense": ``kspace [1, C, ky, kx, 2]``, ``mask [1, 1, ky, kx]``, ``smaps [1, C, ky, kx, 2]`` (optional
for single coil): A = M F S (``kernels.sense_expand`` / ``sense_reduce``). "noncartesian-toeplitz":
``adjoint``, ``kernel`` and (multicoil) ``smaps`` as NC-PDNet takes them: the gradient A^H D A x - A^H D y with the
Toeplitz product (``kernels.toeplitz_product``). That is the density-weighted (preconditioned) data term, so the
non-Cartesian posterior is approximate: the weights D change the effective noise model.

Intensities: the prior was trained on images with a known intensity convention; the sampler multiplies the
prepared image by ``prior_scale`` (default: ``settings.image_q99`` over the 99th percentile of the zero-filled
magnitude, i.e. the zero-filled image is brought to the training images' typical 99th percentile) and divides the
results by it, so everything returned is in the units of the prepared inputs. This module takes the score as a
callable and imports no network code: the runtime may import it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import torch

from mrdserve.models.physics.kernels import (
    combine_coils,
    expand_coils,
    sense_expand,
    sense_reduce,
    toeplitz_product,
)
from mrdserve.models.physics.noise_level import kspace_noise_variance

MAX_POSTERIOR_SAMPLES = 64
SAMPLER_PREPARATIONS = ("cartesian-sense", "noncartesian-toeplitz")  # of models.data.manifest_schema.PREPARATIONS
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplerSettings:
    """Annealed-HMC settings; noise levels and step sizes are in the prior's intensity units (training images
    with max |x| = 1, see ``models.training.dsm``).

    sigma_max, sigma_min, n_levels: the geometric schedule sigma_i = sigma_max (sigma_min / sigma_max)^(i/(n-1)).
    steps_per_level: HMC moves at each level; n_leapfrog: leapfrog steps per move (paper: 3).
    step_size, step_exponent: leapfrog step eps_i = step_size (sigma_i / sigma_max)^step_exponent.
    metropolis: accept/reject each move (Simpson's rule on ``simpson_intervals`` for the prior's log-density
        difference); False gives uncalibrated HMC (no rejection, three fewer score calls per move).
    noise_floor: smallest noise std per real k-space component (prior units) used in the likelihood, so that
        noiseless data keep a finite step (the reference's ``soft_dc_sigma``); also the default for
        non-Cartesian inputs, which carry no raw samples to estimate the noise from.
    image_q99: the 99th percentile of |x| of the prior's training images (the default ``prior_scale`` rule).
    max_batch: chains run together in one batch (None: all ``n_samples``); larger requests run in chunks.
    """

    sigma_max: float = 0.5
    sigma_min: float = 0.01
    n_levels: int = 40
    steps_per_level: int = 2
    n_leapfrog: int = 3
    step_size: float = 0.25
    step_exponent: float = 1.0
    metropolis: bool = True
    simpson_intervals: int = 4
    noise_floor: float = 0.005
    image_q99: float = 0.955
    max_batch: int | None = None

    def __post_init__(self) -> None:
        for name in ("sigma_max", "sigma_min", "step_size", "noise_floor", "image_q99"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"settings.{name} must be a positive finite number, got {value!r}")
        if self.sigma_min > self.sigma_max:
            raise ValueError(f"settings.sigma_min ({self.sigma_min}) must not exceed sigma_max ({self.sigma_max})")
        for name in ("n_levels", "steps_per_level", "n_leapfrog", "simpson_intervals"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"settings.{name} must be a positive integer, got {value!r}")
        if self.simpson_intervals % 2:
            raise ValueError(f"settings.simpson_intervals must be even, got {self.simpson_intervals}")
        if isinstance(self.step_exponent, bool) or not isinstance(self.step_exponent, int | float) \
                or not math.isfinite(self.step_exponent) or self.step_exponent < 0:
            raise ValueError(f"settings.step_exponent must be a finite number >= 0, got {self.step_exponent!r}")
        if self.max_batch is not None and (isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int)
                                           or self.max_batch < 1):
            raise ValueError(f"settings.max_batch must be None or a positive integer, got {self.max_batch!r}")

    def sigmas(self) -> list[float]:
        """The geometric schedule, largest first."""
        if self.n_levels == 1:
            return [float(self.sigma_min)]
        ratio = self.sigma_min / self.sigma_max
        return [float(self.sigma_max * ratio ** (i / (self.n_levels - 1))) for i in range(self.n_levels)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamplerSettings:
        """Settings from a dict (e.g. a manifest's ``sampler_settings``); unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown sampler setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


@dataclass
class PosteriorResult:
    """Posterior samples of one slice, in the units of the prepared inputs.

    samples: complex ``[N, y, x]``; mean: complex ``[y, x]``; std: real ``[y, x]``, the per-pixel standard
    deviation of |samples| (unbiased; zeros for one sample). n_completed: samples that went through the whole
    schedule; stopped_early: the time budget ended the run (the samples that exist were finished with the
    denoising step at the level reached, ``sigma_final``); note says what happened in words. levels_completed
    and n_levels count levels over all chunks; acceptance_rate is the mean Metropolis-Hastings acceptance (1 when
    uncalibrated); prior_scale is the prepared -> prior units factor used; noise_std the noise std per real
    k-space component used in the likelihood (prepared units, after the floor); score_evaluations counts calls
    of the score (a Simpson call holds ``simpson_intervals - 1`` batches).
    """

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    n_completed: int
    seconds: float
    stopped_early: bool
    levels_completed: int
    n_levels: int
    sigma_final: float
    acceptance_rate: float
    prior_scale: float
    noise_std: float
    score_evaluations: int
    note: str = ""


class _DataTerm(Protocol):
    """E(x) = ||A x - y||^2 (up to a constant) and G(x) = A^H (A x - y), so grad_x E / 2 = G (complex [N, y, x])."""

    zero_filled: torch.Tensor  # complex [y, x]

    def energy_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def noise_std(self) -> float | None: ...


class _CartesianSense:
    def __init__(self, kspace: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None) -> None:
        self.mask = mask
        self.measured = mask * torch.complex(kspace[..., 0], kspace[..., 1])
        self.smaps = torch.ones_like(self.measured[:, :1]) if smaps is None else torch.complex(smaps[..., 0],
                                                                                               smaps[..., 1])
        self.zero_filled = sense_reduce(self.measured, self.smaps, mask)[0, 0]

    def energy_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        residual = sense_expand(x.unsqueeze(1), self.smaps, self.mask) - self.measured
        energy = residual.abs().square().reshape(x.shape[0], -1).sum(1)
        return energy, sense_reduce(residual, self.smaps, self.mask)[:, 0]

    def noise_std(self) -> float | None:
        """Noise std per real component of the prepared k-space, from its outer readout samples (None: noiseless)."""
        variance = kspace_noise_variance(self.measured)
        return math.sqrt(variance / 2) if variance > 0 else None


class _ToeplitzNormal:
    def __init__(self, adjoint: torch.Tensor, kernel: torch.Tensor, smaps: torch.Tensor | None) -> None:
        spectrum = torch.complex(kernel[..., 0], kernel[..., 1])
        self.smaps = None if smaps is None else torch.complex(smaps[..., 0], smaps[..., 1])
        adjoint_c = torch.complex(adjoint[..., 0], adjoint[..., 1])
        if self.smaps is None:
            self.kernel = spectrum if spectrum.dim() == 3 else spectrum.unsqueeze(0)  # [1, 2y, 2x]
            self.rhs = adjoint_c  # [1, y, x]
        else:
            self.kernel = spectrum.unsqueeze(1) if spectrum.dim() == 3 else spectrum[None, None]  # [1, 1, 2y, 2x]
            self.rhs = combine_coils(adjoint_c, self.smaps)[:, 0]
        self.zero_filled = self.rhs[0]

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        if self.smaps is None:
            return toeplitz_product(x, self.kernel, 2)
        coils = toeplitz_product(expand_coils(x.unsqueeze(1), self.smaps), self.kernel, 2)
        return combine_coils(coils, self.smaps)[:, 0]

    def energy_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normal = self.normal(x)
        energy = ((x.conj() * normal).real - 2 * (x.conj() * self.rhs).real).reshape(x.shape[0], -1).sum(1)
        return energy, normal - self.rhs

    def noise_std(self) -> float | None:
        return None


class _ScaledData:
    """The data term in prior units: y' = a y, so E'(x') = ||A x' - a y||^2 and G' = A^H (A x' - a y)."""

    def __init__(self, data: _DataTerm, scale: float) -> None:
        self.data, self.scale = data, scale
        self.zero_filled = data.zero_filled * scale

    def energy_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        energy, gradient = self.data.energy_and_gradient(x / self.scale)
        return energy * self.scale**2, gradient * self.scale

    def noise_std(self) -> float | None:
        noise = self.data.noise_std()
        return None if noise is None else noise * self.scale


def _optional_tensor(inputs: dict[str, torch.Tensor], key: str, rank: int,
                     device: torch.device) -> torch.Tensor | None:
    return None if inputs.get(key) is None else _tensor(inputs, key, rank, device)


def _tensor(inputs: dict[str, torch.Tensor], key: str, rank: int, device: torch.device) -> torch.Tensor:
    value = inputs.get(key)
    if value is None:
        raise ValueError(f"inputs[{key!r}] is missing")
    if not isinstance(value, torch.Tensor) or value.is_complex() or not value.is_floating_point():
        raise ValueError(f"inputs[{key!r}] must be a real floating-point tensor, got "
                         f"{getattr(value, 'dtype', type(value).__name__)}")
    if value.dim() != rank or value.shape[0] != 1:
        raise ValueError(f"inputs[{key!r}] must have {rank} dimensions and batch 1 (one slice), got shape "
                         f"{tuple(value.shape)}")
    return value.to(device=device, dtype=torch.float32)


class SamplingCancelledError(RuntimeError):
    """``sample_posterior`` stopped because its ``cancelled`` callback said the samples are no longer wanted."""


def _data_term(inputs: dict[str, torch.Tensor], preparation: str, device: torch.device) -> _DataTerm:
    if not isinstance(inputs, dict):
        raise ValueError(f"inputs must be a dict of prepared tensors, got {type(inputs).__name__}")
    if preparation == "cartesian-sense":
        kspace = _tensor(inputs, "kspace", 5, device)
        mask = _tensor(inputs, "mask", 4, device)
        smaps = _optional_tensor(inputs, "smaps", 5, device)
        if kspace.shape[-1] != 2 or tuple(mask.shape[1:]) != (1, *kspace.shape[2:4]):
            raise ValueError(f"inputs['kspace'] must be [1, C, ky, kx, 2] and inputs['mask'] [1, 1, ky, kx]; got "
                             f"{tuple(kspace.shape)} and {tuple(mask.shape)}")
        if smaps is None and kspace.shape[1] != 1:
            raise ValueError(f"inputs['smaps'] is missing for {kspace.shape[1]}-coil k-space")
        if smaps is not None and smaps.shape != kspace.shape:
            raise ValueError(f"inputs['smaps'] shape {tuple(smaps.shape)} must equal inputs['kspace'] shape "
                             f"{tuple(kspace.shape)}")
        return _CartesianSense(kspace, mask, smaps)
    smaps = _optional_tensor(inputs, "smaps", 5, device)
    adjoint = _tensor(inputs, "adjoint", 4 if smaps is None else 5, device)
    kernel = inputs.get("kernel")
    if not isinstance(kernel, torch.Tensor) or kernel.dim() not in (3, 4) or kernel.shape[-1] != 2 \
            or (kernel.dim() == 4 and kernel.shape[0] != 1):
        raise ValueError("inputs['kernel'] must be a real [1, 2y, 2x, 2] (or [2y, 2x, 2]) Toeplitz kernel, got "
                         f"{tuple(getattr(kernel, 'shape', ()))}")
    kernel = kernel.to(device=device, dtype=torch.float32)
    spatial = tuple(adjoint.shape[-3:-1])
    if adjoint.shape[-1] != 2 or tuple(kernel.shape[-3:-1]) != tuple(2 * n for n in spatial):
        raise ValueError(f"inputs['adjoint'] {tuple(adjoint.shape)} and inputs['kernel'] {tuple(kernel.shape)} "
                         "do not match (the kernel's grid is twice the image's)")
    if smaps is not None and smaps.shape != adjoint.shape:
        raise ValueError(f"inputs['smaps'] shape {tuple(smaps.shape)} must equal the per-coil inputs['adjoint'] "
                         f"shape {tuple(adjoint.shape)}")
    return _ToeplitzNormal(adjoint, kernel, smaps)


def _check_arguments(n_samples: Any, preparation: Any, noise_std: Any, time_budget_s: Any,
                     prior_scale: Any, settings: Any) -> SamplerSettings:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or not 1 <= n_samples <= MAX_POSTERIOR_SAMPLES:
        raise ValueError(f"n_samples must be an integer from 1 to {MAX_POSTERIOR_SAMPLES}, got {n_samples!r}")
    if preparation not in SAMPLER_PREPARATIONS:
        raise ValueError(f"preparation must be one of {', '.join(SAMPLER_PREPARATIONS)}, got {preparation!r}")
    for name, value in (("noise_std", noise_std), ("time_budget_s", time_budget_s), ("prior_scale", prior_scale)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or value <= 0):
            raise ValueError(f"{name} must be None or a positive finite number, got {value!r}")
    if settings is None:
        return SamplerSettings()
    if not isinstance(settings, SamplerSettings):
        raise ValueError(f"settings must be a SamplerSettings, got {type(settings).__name__}")
    return settings


def _channels(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x.real, x.imag], dim=1)


def _complex(x: torch.Tensor) -> torch.Tensor:
    return torch.complex(x[:, 0], x[:, 1])


class _Chains:
    """A batch of chains at one noise level: the annealed log-posterior's gradient, energies and HMC moves."""

    def __init__(self, score: ScoreFn, data: _DataTerm, noise_var: float, settings: SamplerSettings,
                 generator: torch.Generator) -> None:
        self.score, self.data, self.noise_var = score, data, noise_var
        self.settings, self.generator = settings, generator
        self.evaluations = 0
        self.accepted = 0.0
        self.moves = 0

    def prior_score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """s(x, sigma) on real channels ``[N, 2, y, x]``."""
        self.evaluations += 1
        level = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        out = self.score(x, level)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ValueError(f"the score returned {tuple(getattr(out, 'shape', ()))}, expected {tuple(x.shape)}")
        return out.to(x.dtype)

    def evaluate(self, x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(grad log posterior, prior score, data potential [N]) at ``x [N, 2, y, x]``."""
        variance = self.noise_var + sigma * sigma
        prior = self.prior_score(x, sigma)
        energy, gradient = self.data.energy_and_gradient(_complex(x))
        return prior - _channels(gradient) / variance, prior, energy / (2 * variance)

    def prior_log_ratio(self, x: torch.Tensor, proposal: torch.Tensor, prior_start: torch.Tensor,
                        prior_end: torch.Tensor, sigma: float) -> torch.Tensor:
        """log p_sigma(proposal) - log p_sigma(x): the score integrated along the segment (Simpson's rule)."""
        n = self.settings.simpson_intervals
        step = proposal - x
        inner = [x + (k / n) * step for k in range(1, n)]
        batch = x.shape[0]
        scores = self.prior_score(torch.cat(inner), sigma).split(batch)
        values = [prior_start, *scores, prior_end]
        weights = [1.0] + [4.0 if k % 2 else 2.0 for k in range(1, n)] + [1.0]
        integral = sum(w * (v * step).reshape(batch, -1).sum(1) for w, v in zip(weights, values, strict=True))
        return integral / (3.0 * n)

    def move(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor], sigma: float,
             eps: float) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One HMC move (leapfrog, then Metropolis-Hastings per chain when enabled)."""
        grad, prior, potential = cache
        momentum = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        p = momentum + 0.5 * eps * grad
        proposal = x
        new = cache
        for step in range(self.settings.n_leapfrog):
            proposal = proposal + eps * p
            new = self.evaluate(proposal, sigma)
            if step < self.settings.n_leapfrog - 1:
                p = p + eps * new[0]
        p = p + 0.5 * eps * new[0]
        self.moves += 1
        if not self.settings.metropolis:
            finite = torch.isfinite(proposal).reshape(x.shape[0], -1).all(1)
            self.accepted += float(finite.float().mean())
            return self._choose(finite, proposal, x, new, cache)
        batch = x.shape[0]
        log_prior = self.prior_log_ratio(x, proposal, prior, new[1], sigma)
        kinetic = 0.5 * (p.square().reshape(batch, -1).sum(1) - momentum.square().reshape(batch, -1).sum(1))
        log_accept = log_prior - (new[2] - potential) - kinetic
        log_accept = torch.where(torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -math.inf))
        uniform = torch.rand(batch, generator=self.generator, device=x.device, dtype=x.dtype)
        accept = torch.log(uniform) < log_accept
        self.accepted += float(accept.float().mean())
        return self._choose(accept, proposal, x, new, cache)

    @staticmethod
    def _choose(accept: torch.Tensor, proposal: torch.Tensor, x: torch.Tensor, new: tuple, old: tuple
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        where = accept.reshape(-1, 1, 1, 1)
        chosen = torch.where(where, proposal, x)
        cache = (torch.where(where, new[0], old[0]), torch.where(where, new[1], old[1]),
                 torch.where(accept, new[2], old[2]))
        return chosen, cache


def _quantile(values: torch.Tensor, q: float) -> float:
    flat = values.reshape(-1).to(torch.float64)
    k = min(flat.numel(), max(1, round(q * flat.numel())))
    return float(flat.kthvalue(k).values)


def sample_posterior(score: ScoreFn, inputs: dict[str, torch.Tensor], preparation: str, n_samples: int,
                     noise_std: float | None = None, settings: SamplerSettings | None = None, seed: int = 0,
                     time_budget_s: float | None = None, progress: Callable[[float], None] | None = None,
                     device: torch.device | str = "cpu", prior_scale: float | None = None,
                     cancelled: Callable[[], bool] | None = None) -> PosteriorResult:
    """Draw ``n_samples`` posterior samples of one prepared slice by annealed HMC (see the module docstring).

    Args:
        score: the prior's score ``(x [B, 2, y, x] float32, sigma [B] float32) -> [B, 2, y, x]``, in the prior's
            intensity units (e.g. ``models.data.score_prior_artifact.load_score_prior``), on ``device``.
        inputs: the prepared network inputs of ONE slice (batch 1) for ``preparation``.
        preparation: "cartesian-sense" or "noncartesian-toeplitz".
        n_samples: chains, 1 to ``MAX_POSTERIOR_SAMPLES``, run as one batch (chunks of ``settings.max_batch``).
        noise_std: std of each real component of the prepared k-space noise (prepared units); None estimates it
            from the outer readout samples (Cartesian) or uses ``settings.noise_floor`` (non-Cartesian).
        time_budget_s: wall-clock budget; when spent, sampling stops after the current move, the samples that
            exist get the denoising step at the level reached and ``stopped_early`` is set.
        progress: called with the fraction of levels done (0 to 1) as levels complete.
        prior_scale: prepared units -> prior units factor; None applies the rule of ``settings.image_q99``.
        seed: seeds the initial noise, the momenta and the accept/reject draws.
        cancelled: asked after every move; True (the requester went away, the service shuts down) stops the
            sampling at once with ``SamplingCancelledError``, nothing returned.
    """
    settings = _check_arguments(n_samples, preparation, noise_std, time_budget_s, prior_scale, settings)
    if not callable(score):
        raise ValueError(f"score must be callable (x, sigma) -> score, got {type(score).__name__}")
    device = torch.device(device)
    start = time.perf_counter()
    data = _data_term(inputs, preparation, device)
    zero_filled = data.zero_filled
    q99 = _quantile(zero_filled.abs(), 0.99)
    if prior_scale is None:
        if not q99 > 0:
            raise ValueError("the zero-filled image is zero everywhere: give prior_scale to sample it")
        prior_scale = settings.image_q99 / q99
    measured_noise = noise_std if noise_std is not None else data.noise_std()
    noise_prior = max(settings.noise_floor, (measured_noise or 0.0) * prior_scale)
    # the data term is linear: in prior units (x' = a x, y' = a y) it is a^2 ||A x - y||^2 with the same A
    scaled = _ScaledData(data, prior_scale)
    sigmas = settings.sigmas()
    chunk = settings.max_batch or n_samples
    sizes = [min(chunk, n_samples - i) for i in range(0, n_samples, chunk)]
    generator = torch.Generator(device=device).manual_seed(int(seed))
    chains = _Chains(score, scaled, noise_prior**2, settings, generator)
    finished: list[torch.Tensor] = []
    stopped, levels_done, sigma_final = False, 0, sigmas[-1]
    total_levels = len(sigmas) * len(sizes)
    with torch.no_grad():
        for chunk_index, size in enumerate(sizes):
            x = _channels((prior_scale * zero_filled).expand(size, *zero_filled.shape))
            x = x + sigmas[0] * torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
            sigma = sigmas[0]
            for level, sigma in enumerate(sigmas):
                eps = settings.step_size * (sigma / settings.sigma_max) ** settings.step_exponent
                cache = chains.evaluate(x, sigma)
                for _ in range(settings.steps_per_level):
                    x, cache = chains.move(x, cache, sigma, eps)
                    if cancelled is not None and cancelled():
                        raise SamplingCancelledError("posterior sampling cancelled: its requester no longer waits")
                    if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                        stopped = True
                        break
                if stopped:
                    levels_done = chunk_index * len(sigmas) + level
                    break
                if progress is not None:
                    progress((chunk_index * len(sigmas) + level + 1) / total_levels)
            sigma_final = sigma
            x = x + sigma * sigma * chains.prior_score(x, sigma)  # expected denoised sample (Tweedie)
            finished.append(_complex(x) / prior_scale)
            if stopped:
                break
    if not stopped:
        levels_done = total_levels
    samples = torch.cat(finished)
    n_completed = sum(sizes[:len(finished) - 1]) + (0 if stopped else sizes[len(finished) - 1])
    magnitude = samples.abs()
    std = magnitude.std(0) if samples.shape[0] > 1 else torch.zeros_like(magnitude[0])
    seconds = time.perf_counter() - start
    note = ""
    if stopped:
        note = (f"time budget of {time_budget_s:g} s reached after {levels_done} of {total_levels} levels; "
                f"{samples.shape[0] - n_completed} sample(s) were finished with the denoising step at sigma "
                f"{sigma_final:.3g} instead of {sigmas[-1]:.3g}")
    return PosteriorResult(
        samples=samples, mean=samples.mean(0), std=std, n_completed=int(n_completed), seconds=seconds,
        stopped_early=stopped, levels_completed=int(levels_done), n_levels=total_levels, sigma_final=float(sigma_final),
        acceptance_rate=chains.accepted / max(chains.moves, 1), prior_scale=float(prior_scale),
        noise_std=float(noise_prior / prior_scale), score_evaluations=chains.evaluations, note=note)
