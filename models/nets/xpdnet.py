"""XPDNet (Ramzi, Starck, Ciuciu 2020): unrolled primal-only network for Cartesian multicoil MRI.

A buffer of ``n_primal`` images starts as n_primal copies of the SENSE adjoint A^H y (as in the reference
``CrossDomainNet``). Each iteration computes the gradient A^H(A x_1 - y) of the data term at the first buffer
image and updates the buffer residually with an MWCNN applied to [buffer, gradient] as real/imaginary channels.
Sensitivities, optionally refined once by a per-coil U-Net, enter only through the SENSE operator.
Output: |x_1|.

``warm_start=K`` starts the buffer from Tikhonov-regularised CG-SENSE (K conjugate-gradient steps on
(A^H A + l2 I) x = A^H y) instead of A^H y, so the network refines an image whose aliasing is already unfolded
(the data term's work at large matrices, which a few unrolled iterations cannot do alone). The weight mirrors the
classical ``cg-sense``: l2 = factor * sigma^2 / mean|A^H y|^2, sigma^2 from the outer readout samples, the factor
learned (initially ``warm_start_factor``).

``final_dc=K`` ends with a data-consistency step (as MoDL's): K CG steps on
(A^H A + mu I) x = A^H y + mu x_net from the network's image x_net, with mu = factor * sigma^2 / mean|A^H y|^2,
sigma^2 from the misfit of a K-step least-squares SENSE fit (``kernels.sense_fit_noise_variance``, which signal at
the readout's edge does not fool) and the factor learned (initially ``final_dc_factor``): on clean data the measured
k-space overrules the network, on noisy data the network's image holds.

``prior="learnlets"`` replaces the MWCNN of every iteration by ``LearnletsPrior`` (models.nets.learnlets): a 1x1
convolution mixes [buffer, gradient] into channels, Learnlets shared by the channels denoise each with its own
learned noise level, and a 1x1 convolution of [denoised, input] gives the update, initially one proximal gradient
step ``x <- D(x - step * gradient)`` per buffer image (Learnlets as the sparsity prior, Ramzi's thesis ch. 6).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mrdserve.models.nets.complex import channels_to_complex, complex_to_channels, magnitude, real_to_complex
from mrdserve.models.nets.learnlets import LearnletsPrior
from mrdserve.models.nets.mwcnn import MWCNN
from mrdserve.models.nets.sensitivity_refiner import SensitivityRefiner
from mrdserve.models.physics.kernels import (
    edge_noise_variance,
    sense_cg,
    sense_fit_noise_variance,
    sense_gradient,
    sense_reduce,
)

ImageNetFactory = Callable[[int, int], nn.Module]


def mwcnn_factory(preset: str) -> ImageNetFactory:
    """Factory of MWCNN image nets of ``preset`` ("small", "medium", "big") for given in/out channels; the
    residual connection is XPDNet's own buffer update, so the MWCNN has none."""

    def build(in_channels: int, out_channels: int) -> nn.Module:
        return MWCNN.from_preset(preset, in_channels, out_channels, residual=False)

    return build


def learnlets_factory(kwargs: dict[str, Any] | None = None) -> ImageNetFactory:
    """Factory of ``LearnletsPrior`` image nets with ``kwargs`` (``n_mixed``, ``sigma``, ``step`` and the
    ``Learnlets`` arguments ``n_scales``, ``n_filters``, ``analysis_size``, ``synthesis_size``,
    ``exact_reconstruction``)."""
    options = dict(kwargs or {})

    def build(in_channels: int, out_channels: int) -> nn.Module:
        return LearnletsPrior(in_channels, out_channels, **options)

    return build


PRIORS = ("mwcnn", "learnlets")


class XPDNet(nn.Module):
    """XPDNet.

    ``forward(kspace [B, C, ky, kx, 2], mask [B, 1, ky, kx] float, smaps [B, C, ky, kx, 2]) -> [B, ky, kx]``.

    Args:
        n_iter: unrolled iterations (10 by default, 25 for the fastMRI 2020 challenge setup).
        n_primal: image buffer size.
        preset: MWCNN preset of the image nets ("small" for tests and demos, "medium" as in the thesis).
        refine_smaps: refine the sensitivities once with ``SensitivityRefiner(refiner_preset)``.
        image_net: factory ``(in_channels, out_channels) -> nn.Module`` overriding the prior (e.g. for tests).
        prior: the image nets, "mwcnn" (``preset``) or "learnlets" (``LearnletsPrior(**learnlets)``).
        learnlets: keyword arguments of ``LearnletsPrior`` when ``prior="learnlets"``.
        warm_start: CG-SENSE steps of the initial buffer image (0: the adjoint A^H y, as the reference).
        warm_start_factor: initial factor of the warm start's noise-scaled Tikhonov weight (learned).
        final_dc: CG steps of the final data-consistency step (0: none, the network's image is the output).
        final_dc_factor: initial factor of that step's noise-scaled weight of the network's image (learned).
    """

    def __init__(self, n_iter: int = 10, n_primal: int = 5, preset: str = "small", refine_smaps: bool = False,
                 refiner_preset: str = "small", image_net: ImageNetFactory | None = None, prior: str = "mwcnn",
                 learnlets: dict[str, Any] | None = None, warm_start: int = 0,
                 warm_start_factor: float = 3.0, final_dc: int = 0, final_dc_factor: float = 3.0) -> None:
        super().__init__()
        if n_iter < 1 or n_primal < 1:
            raise ValueError(f"n_iter and n_primal must be >= 1, got {n_iter} and {n_primal}")
        if warm_start < 0 or final_dc < 0:
            raise ValueError(f"warm_start and final_dc (CG steps) must be >= 0, got {warm_start} and {final_dc}")
        if not (warm_start_factor > 0 and final_dc_factor > 0):
            raise ValueError(f"warm_start_factor and final_dc_factor must be > 0, got {warm_start_factor} and "
                             f"{final_dc_factor}")
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        if learnlets is not None and prior != "learnlets":
            raise ValueError("learnlets (keyword arguments) needs prior='learnlets'")
        if image_net is not None:
            build = image_net
        elif prior == "learnlets":
            build = learnlets_factory(learnlets)
        else:
            build = mwcnn_factory(preset)
        self.n_primal = n_primal
        self.image_nets = nn.ModuleList([build(2 * (n_primal + 1), 2 * n_primal) for _ in range(n_iter)])
        self.refine_smaps = refine_smaps
        self.refiner = SensitivityRefiner(preset=refiner_preset) if refine_smaps else nn.Identity()
        self.warm_start = warm_start
        self.final_dc = final_dc
        self._learned_factor("warm_start_log_factor", warm_start_factor, warm_start > 0)
        self._learned_factor("final_dc_log_factor", final_dc_factor, final_dc > 0)

    def _learned_factor(self, name: str, initial: float, used: bool) -> None:
        """A log-factor parameter where ``used``; else a buffer that is not saved (state dicts of XPDNets
        without it are unchanged) but keeps the attribute scriptable."""
        value = torch.tensor(math.log(initial))
        if used:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value, persistent=False)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor) -> torch.Tensor:
        measured = real_to_complex(kspace)  # [B, C, ky, kx]
        smaps_c = real_to_complex(self.refiner(smaps))
        adjoint = sense_reduce(measured, smaps_c, mask)  # [B, 1, y, x]: the coil axis kept (export-safe)
        image = adjoint
        if self.warm_start > 0:
            l2 = torch.exp(self.warm_start_log_factor) * edge_noise_variance(measured, mask) / mean_power(adjoint)
            image = sense_cg(adjoint, smaps_c, mask, l2.clamp_min(1e-6), self.warm_start)
        buffer = torch.cat([image] * self.n_primal, dim=1)  # [B, n_primal, y, x]
        for image_net in self.image_nets:
            gradient = sense_gradient(buffer[:, :1], measured, smaps_c, mask)
            features = complex_to_channels(torch.cat([buffer, gradient], dim=1))
            buffer = buffer + channels_to_complex(image_net(features))
        output = buffer[:, :1]
        if self.final_dc > 0:  # (A^H A + mu I) d = A^H (y - A x_net), x = x_net + d
            with torch.no_grad():  # a statistic of the data, no gradient
                noise = sense_fit_noise_variance(measured, smaps_c, mask, self.final_dc)
            mu = torch.exp(self.final_dc_log_factor) * noise / mean_power(adjoint)
            output = output + sense_cg(-sense_gradient(output, measured, smaps_c, mask), smaps_c, mask,
                                       mu.clamp_min(1e-6), self.final_dc)
        return magnitude(output).squeeze(1)


def mean_power(image: torch.Tensor) -> torch.Tensor:
    """Per-sample mean |x|^2 of a complex ``[B, 1, y, x]`` image, ``[B, 1, 1, 1]`` (at least 1e-12)."""
    power = image.real * image.real + image.imag * image.imag
    return power.reshape(power.shape[0], -1).mean(dim=1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
