"""Noise-conditional score network s(x, sigma) on complex images, for denoising-score-matching priors.

The prior of the posterior sampler of Ramzi, Remy, Lanusse, Starck, Ciuciu (NeurIPS 2020 workshop "Denoising
score-matching for uncertainty quantification in inverse problems"; thesis ch. 6.2): a small U-Net on the real and
imaginary channels ``x [B, 2, y, x]`` that estimates the score grad log p_sigma(x) of the images smoothed by
Gaussian noise of standard deviation sigma. Noise conditioning: as in the reference U-ResNet of that work
(github.com/b-remy/score-estimation-comparison, branch mri-recon), sigma enters as a constant input channel (here
log(|sigma| + floor)) at the input and again at the bottleneck, and the network's output is divided by
|sigma| + floor, so the network predicts an O(1) normalised noise. Added to that, the preconditioning of Karras et
al. (EDM, NeurIPS 2022) with data scale sigma_d: the input is divided by sqrt(sigma^2 + sigma_d^2) and the score of
a Gaussian N(0, sigma_d^2) smoothed at sigma is the skip term,

    s(x, sigma) = -x / (sigma^2 + sigma_d^2) + sigma_d F(x / sqrt(sigma^2 + sigma_d^2), sigma)
                  / ((|sigma| + floor) sqrt(sigma^2 + sigma_d^2)),

which is the score of the EDM denoiser D = c_skip x + c_out F, (D - x) / sigma^2; F is the U-Net's output
times a learned scalar that starts at 0 (the head's normalised weight cannot shrink). Without it a network that sees
sigma only as an additive channel must learn a 1/sigma gain on its input, and short trainings (a CPU demo prior)
stall at the trivial loss. Every convolution is spectrally normalised (torch's power-iteration parametrisation)
and scaled by ``lipschitz`` (the reference bounds each layer's norm by 2), which keeps the learned score smooth in
x, as annealed HMC needs.

Exported form: ``forward(x [B, 2, y, x], sigma [B]) -> score [B, 2, y, x]``; any matrix (padded inside to a
multiple of 2^(n_scales - 1), cropped back). TorchScript scripts a copy with the normalised weights baked in
(``__prepare_scriptable__``); the ONNX exporter traces the eval-mode parametrisation directly.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils.parametrizations import spectral_norm as spectral_normalise

from mrdserve.models.nets.padding import crop_like, pad_to_multiple

SIGMA_FLOOR = 1e-3  # |sigma| + floor in the conditioning and the output division, as the reference implementation


class LipschitzConv(nn.Module):
    """3x3 convolution whose weight is spectrally normalised (unit norm of the reshaped weight) times ``gain``."""

    def __init__(self, in_channels: int, out_channels: int, gain: float) -> None:
        super().__init__()
        self.conv = spectral_normalise(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.gain = float(gain)

    def baked(self) -> nn.Conv2d:
        """A plain convolution computing the same map in eval mode (``gain`` times the normalised weight)."""
        was_training = self.training
        self.eval()  # a spectral-normalised weight read in training mode would run a power iteration
        plain = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, 3, padding=1)
        with torch.no_grad():
            plain.weight.copy_(self.gain * self.conv.weight)
            plain.bias.copy_(self.conv.bias)
        self.train(was_training)
        return plain.to(device=self.conv.bias.device, dtype=self.conv.bias.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.conv2d(x, self.gain * self.conv.weight, self.conv.bias, padding=1)


def _conv(in_channels: int, out_channels: int, spectral_norm: bool, gain: float) -> nn.Module:
    if spectral_norm:
        return LipschitzConv(in_channels, out_channels, gain)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by a ReLU."""

    def __init__(self, in_channels: int, out_channels: int, spectral_norm: bool, gain: float) -> None:
        super().__init__()
        self.first = _conv(in_channels, out_channels, spectral_norm, gain)
        self.second = _conv(out_channels, out_channels, spectral_norm, gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.relu(self.second(functional.relu(self.first(x))))


class ScoreNet(nn.Module):
    """U-Net score network ``s(x [B, 2, y, x], sigma [B]) -> [B, 2, y, x]`` (see the module docstring).

    Args:
        n_filters: channels at full resolution, doubled at each coarser scale.
        n_scales: resolutions (``n_scales - 1`` average-pool downsamplings).
        spectral_norm: spectrally normalise every convolution (scripting bakes the weights into a plain copy).
        lipschitz: gain of each normalised convolution (bound on its reshaped weight's spectral norm).
        sigma_data: sigma_d of the preconditioning, about the per-channel standard deviation of the images.
    """

    def __init__(self, n_filters: int = 16, n_scales: int = 3, spectral_norm: bool = True,
                 lipschitz: float = 2.0, sigma_data: float = 0.35) -> None:
        super().__init__()
        for name, value in (("n_filters", n_filters), ("n_scales", n_scales)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not lipschitz > 0 or not math.isfinite(lipschitz):
            raise ValueError(f"lipschitz must be a positive number, got {lipschitz!r}")
        if not sigma_data > 0 or not math.isfinite(sigma_data):
            raise ValueError(f"sigma_data must be a positive number, got {sigma_data!r}")
        self.sigma_data = float(sigma_data)
        self.sigma_floor = SIGMA_FLOOR
        self.n_filters, self.n_scales = n_filters, n_scales
        self.spectral_norm, self.lipschitz = bool(spectral_norm), float(lipschitz)
        self.multiple = 2 ** (n_scales - 1)
        widths = [n_filters * 2**i for i in range(n_scales)]
        self.down = nn.ModuleList()
        in_channels = 3  # real, imaginary, noise level
        for i, width in enumerate(widths):
            extra = 1 if i == n_scales - 1 else 0  # the noise level again at the bottleneck
            self.down.append(ConvBlock(in_channels + extra, width, spectral_norm, lipschitz))
            in_channels = width
        self.up = nn.ModuleList(ConvBlock(widths[i + 1] + widths[i], widths[i], spectral_norm, lipschitz)
                                for i in range(n_scales - 2, -1, -1))
        self.head = _conv(widths[0], 2, spectral_norm, lipschitz)
        # the head's normalised weight cannot shrink: a learned output scale, zero at first (the network then
        # starts as the Gaussian skip term and never has to silence its ReLUs to get there)
        self.output_scale = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        level = sigma.abs().reshape(-1, 1, 1, 1) + self.sigma_floor
        spread = torch.sqrt(sigma.reshape(-1, 1, 1, 1).square() + self.sigma_data**2)
        padded = pad_to_multiple(x / spread, self.multiple, 2)
        condition = torch.log(level) * torch.ones_like(padded[:, :1])
        out = torch.cat([padded, condition], dim=1)
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.down):
            if i > 0:
                skips.append(out)
                out = functional.avg_pool2d(out, 2)
            if i == self.n_scales - 1:
                out = torch.cat([out, torch.log(level) * torch.ones_like(out[:, :1])], dim=1)
            out = block(out)
        for block in self.up:
            skip = skips.pop()
            out = functional.interpolate(out, scale_factor=2.0, mode="nearest")
            out = block(torch.cat([out, skip], dim=1))
        residual = crop_like(self.head(out), x, 2) * (self.output_scale * self.sigma_data / (level * spread))
        return residual - x / spread.square()

    def without_parametrisation(self) -> ScoreNet:
        """A plain copy (no parametrisation) computing the same map as this network in eval mode."""
        if not self.spectral_norm:
            return copy.deepcopy(self)
        plain = ScoreNet(self.n_filters, self.n_scales, spectral_norm=False, lipschitz=self.lipschitz,
                         sigma_data=self.sigma_data)
        plain.output_scale.data.copy_(self.output_scale.data)
        source = {name: module for name, module in self.named_modules() if isinstance(module, LipschitzConv)}
        for name, module in plain.named_modules():
            if name in source:
                baked = source[name].baked()
                module.weight.data.copy_(baked.weight.data)
                module.bias.data.copy_(baked.bias.data)
        first = next(self.parameters())
        return plain.to(device=first.device, dtype=first.dtype).train(self.training)

    def __prepare_scriptable__(self) -> ScoreNet:
        """TorchScript cannot compile torch's spectral-norm parametrisation: script the baked plain copy."""
        return self.without_parametrisation() if self.spectral_norm else self
