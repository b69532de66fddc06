"""Learnlets (Ramzi, Michalewicz, Starck, Moreau, Ciuciu 2020, "Wavelets in the deep learning era"; Ramzi's thesis,
ch. 6.1): a learned, sigma-adaptive wavelet-like denoiser, usable alone and as the image prior of unrolled networks.

A fixed Laplacian-pyramid split gives ``n_scales`` detail bands: at each scale the current image is low-passed by a
B3-spline filter and decimated by 2 (the next, coarser image); its bicubic up-sampling is subtracted from the current
image (the detail band). At every scale a learned analysis filter bank (``n_filters`` filters, each of unit l2 norm:
the forward normalises them, so the constraint holds after every optimiser step) plus an identity filter analyse the
band; the coefficients are soft-thresholded at ``alpha * sigma * std``, with learned levels ``alpha`` (one for the
learned filters and one for the identity filter of each scale) clamped to [0, 5], and ``std`` each coefficient's
standard deviation when the input is unit white noise (see ``band_noise_autocovariance``); learned linear synthesis
filters map them back; the coarse image passes untouched and the pyramid is collapsed.

Exact reconstruction (``exact_reconstruction=True``, the thesis's variant and the default): the identity filter's
synthesis is fixed to the identity, and the learned synthesis sees only what thresholding changed in the learned
coefficients, ``S(ST(W d) - W ST_id(d))``; for sigma = 0 that term is 0 and the network returns its input exactly.
Without it, 257 (``n_filters + 1``) learned synthesis filters take all the thresholded coefficients.

Without biases and with thresholds proportional to sigma, the network is positively homogeneous:
``D(a x, a sigma) = a D(x, sigma)`` for a > 0, so intensity units do not matter as long as sigma is in the same units.
Only convolutions, bicubic resizing and pointwise ops: it scripts and exports to ONNX (dynamic batch and matrix).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn import functional

B3_SPLINE = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)
MAX_THRESHOLD = 5.0


def _low_pass_kernels(device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The separable B3-spline low-pass as row ``[1, 1, 1, 5]`` and column ``[1, 1, 5, 1]`` kernels."""
    taps = torch.tensor(B3_SPLINE, dtype=torch.float32, device=device)
    return taps.reshape(1, 1, 1, 5), taps.reshape(1, 1, 5, 1)


def _downsample(x: torch.Tensor, row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
    """B3-spline low-pass (replicate borders, any size) and decimation by 2: ``[B, 1, h, w]`` -> ceil halves."""
    x = functional.conv2d(functional.pad(x, [2, 2, 0, 0], mode="replicate"), row)
    x = functional.conv2d(functional.pad(x, [0, 0, 2, 2], mode="replicate"), column)
    return x[:, :, ::2, ::2]


def _upsample(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bicubic up-sampling of ``x`` to the spatial size of ``reference``."""
    size = [reference.shape[-2], reference.shape[-1]]
    return functional.interpolate(x, size=size, mode="bicubic", align_corners=False)


def pyramid(x: torch.Tensor, n_scales: int, row: torch.Tensor,
            column: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Laplacian-pyramid split of ``x [B, 1, y, x]``: detail bands, finest first, and the coarse image."""
    details: list[torch.Tensor] = []
    current = x
    for _ in range(n_scales):
        low = _downsample(current, row, column)
        details.append(current - _upsample(low, current))
        current = low
    return details, current


def collapse(details: list[torch.Tensor], coarse: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pyramid``: up-sample and add the bands back, coarsest first."""
    image = coarse
    for i in range(len(details)):
        detail = details[len(details) - 1 - i]
        image = _upsample(image, detail) + detail
    return image


def _level_autocovariance_1d(level: int) -> torch.Tensor:
    """1D autocovariance of the level-``level`` low-pass image for unit white noise input, exactly (float64).

    ``L_{j+1}[p] = sum_a h[a] L_j[2p + a]`` gives ``rho_{j+1}(t) = sum_k (h * h)(k) rho_j(2t + k)``, from
    ``rho_0 = delta``; the 2D autocovariance is the outer product (the split is separable).
    """
    taps = torch.tensor(B3_SPLINE, dtype=torch.float64)
    hh = torch.conv1d(taps.reshape(1, 1, -1), taps.reshape(1, 1, -1), padding=len(B3_SPLINE) - 1).flatten()
    rho = torch.ones(1, dtype=torch.float64)
    for _ in range(level):
        full = torch.conv1d(rho.reshape(1, 1, -1), hh.reshape(1, 1, -1), padding=hh.numel() - 1).flatten()
        centre = full.numel() // 2
        half = centre // 2
        rho = full[centre - 2 * half : centre + 2 * half + 1 : 2]
    return rho


@functools.lru_cache(maxsize=16)
def _band_autocovariance(n_scales: int, radius: int) -> tuple[tuple[float, ...], ...]:
    """Cached estimate behind ``band_noise_autocovariance`` (flattened, as plain floats)."""
    side, margin, count = 128, 12, 8
    result = []
    with torch.no_grad(), torch.device("cpu"):  # plain numbers, also when built under another default device
        generator = torch.Generator(device="cpu").manual_seed(20200)
        row, column = _low_pass_kernels("cpu")
        frequencies = torch.fft.fftfreq(side, dtype=torch.float64)
        white = torch.randn(count, 1, side, side, generator=generator, dtype=torch.float64, device="cpu")
        spectrum_white = torch.fft.fft2(white)
        for level in range(n_scales):
            rho = _level_autocovariance_1d(level)
            lags = torch.arange(rho.numel(), dtype=torch.float64) - rho.numel() // 2
            # power spectrum of the stationary level-j noise (real, even), then noise coloured to have it exactly
            power = (rho.reshape(-1, 1) * torch.cos(2 * math.pi * lags.reshape(-1, 1) * frequencies)).sum(0)
            amplitude = torch.sqrt(power.clamp_min(0.0))
            coloured = torch.fft.ifft2(spectrum_white * amplitude.reshape(-1, 1) * amplitude).real.float()
            low = _downsample(coloured, row, column)
            detail = (coloured - _upsample(low, coloured))[:, :, margin : side - margin, margin : side - margin]
            inner = detail.shape[-1] - 2 * radius
            centre = detail[:, :, radius : radius + inner, radius : radius + inner]
            # sum_p detail[p + tau] centre[p] for every lag tau, each image its own group
            products = functional.conv2d(detail.transpose(0, 1), centre, groups=count)  # [1, count, 2r+1, 2r+1]
            covariance = products.mean(dim=(0, 1)) / (inner * inner)
            covariance = 0.5 * (covariance + covariance.flip(0).flip(1))  # R(tau) = R(-tau)
            result.append(tuple(covariance.flatten().tolist()))
    return tuple(result)


def band_noise_autocovariance(n_scales: int, radius: int) -> torch.Tensor:
    """Autocovariance ``R_j(tau)`` of each detail band for unit white noise input, lags ``|tau| <= radius``:
    ``[n_scales, 2 radius + 1, 2 radius + 1]`` float32 on the CPU.

    The low-pass image of level j has stationary noise whose autocovariance is known exactly
    (``_level_autocovariance_1d``); the detail band applies one more split to it, which is only periodically
    stationary (decimation), so ``R_j`` is the average over positions, estimated once per process with noise of
    exactly that autocovariance (8 images of 128 x 128, a fixed seed, away from the borders: about 1 % standard
    error). A unit-norm filter ``w`` applied to band j then has noise standard deviation ``sigma sqrt(w^T R_j w)``
    (``sigma sqrt(R_j(0))`` for the identity filter): the normalisation of the thresholds.
    """
    size = 2 * radius + 1
    values = _band_autocovariance(int(n_scales), int(radius))
    return torch.tensor(values, dtype=torch.float32, device="cpu").reshape(n_scales, size, size)


def soft_threshold(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``sign(x) max(|x| - threshold, 0)``; threshold 0 returns ``x`` exactly."""
    return torch.sign(x) * functional.relu(torch.abs(x) - threshold)


class LearnletScale(nn.Module):
    """Analysis, thresholding and synthesis of one detail band ``[B, 1, h, w]`` (see the module docstring)."""

    def __init__(self, n_filters: int, analysis_size: int, synthesis_size: int, exact_reconstruction: bool,
                 autocovariance: torch.Tensor) -> None:
        super().__init__()
        self.exact_reconstruction = exact_reconstruction
        self.max_level = MAX_THRESHOLD
        self.analysis_padding = analysis_size // 2
        self.synthesis_padding = synthesis_size // 2
        self.analysis = nn.Parameter(torch.randn(n_filters, 1, analysis_size, analysis_size) / analysis_size)
        n_synthesis = n_filters if exact_reconstruction else n_filters + 1
        # small: the learned part starts as a faint correction of the identity filter's thresholding
        bound = 0.1 / math.sqrt(n_synthesis * synthesis_size * synthesis_size)
        synthesis = torch.empty(1, n_synthesis, synthesis_size, synthesis_size).uniform_(-bound, bound)
        if not exact_reconstruction:  # start from the thresholded identity coefficients, as the exact variant does
            synthesis[0, n_filters].zero_()
            synthesis[0, n_filters, self.synthesis_padding, self.synthesis_padding] = 1.0
        self.synthesis = nn.Parameter(synthesis)
        # threshold levels (in noise standard deviations): learned filters, identity filter (thesis: 2 and 3)
        self.levels = nn.Parameter(torch.tensor([2.0, 3.0]))
        self.centre = autocovariance.shape[-1] // 2  # the lag-0 index
        self.register_buffer("autocovariance", autocovariance.reshape(1, 1, *autocovariance.shape), persistent=False)

    def unit_filters(self) -> torch.Tensor:
        """The analysis filters normalised to unit l2 norm (the constraint, enforced at every forward)."""
        norms = torch.sqrt(self.analysis.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-12)
        return self.analysis / norms

    def coefficient_std(self, filters: torch.Tensor) -> torch.Tensor:
        """Noise standard deviation of each filter's coefficients for unit white noise input: ``sqrt(w^T R w)``."""
        weighted = functional.conv2d(filters, self.autocovariance, padding=self.centre)
        return torch.sqrt((filters * weighted).sum(dim=(1, 2, 3)).clamp_min(1e-12))

    def forward(self, detail: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Denoised band from ``detail [B, 1, h, w]`` and ``sigma [B, 1, 1, 1]``."""
        filters = self.unit_filters()
        levels = self.levels.clamp(0.0, self.max_level)
        coefficients = functional.conv2d(detail, filters, padding=self.analysis_padding)
        threshold = levels[0] * sigma * self.coefficient_std(filters).reshape(1, -1, 1, 1)
        identity_threshold = levels[1] * sigma * torch.sqrt(self.autocovariance[0, 0, self.centre, self.centre])
        thresholded = soft_threshold(coefficients, threshold)
        identity = soft_threshold(detail, identity_threshold)
        if self.exact_reconstruction:
            reanalysed = functional.conv2d(identity, filters, padding=self.analysis_padding)
            return identity + functional.conv2d(thresholded - reanalysed, self.synthesis,
                                                padding=self.synthesis_padding)
        return functional.conv2d(torch.cat([thresholded, identity], dim=1), self.synthesis,
                                 padding=self.synthesis_padding)


class Learnlets(nn.Module):
    """Learnlets denoiser: ``forward(image [B, 1, y, x], sigma [B] or [B, 1]) -> denoised [B, 1, y, x]``.

    Defaults are the thesis's: 5 scales, 256 learned 11x11 analysis filters (+ identity) and 13x13 synthesis filters
    per scale, two threshold levels per scale; 371,210 parameters with exact reconstruction (256 learned synthesis
    filters + the fixed identity per scale), 372,055 without (257 learned synthesis filters per scale).

    Args:
        n_scales: detail bands of the Laplacian pyramid.
        n_filters: learned analysis filters per scale.
        analysis_size, synthesis_size: odd kernel sizes.
        exact_reconstruction: fix the identity filter's synthesis so that sigma = 0 returns the input exactly.
    """

    def __init__(self, n_scales: int = 5, n_filters: int = 256, analysis_size: int = 11, synthesis_size: int = 13,
                 exact_reconstruction: bool = True) -> None:
        super().__init__()
        for name, value in (("n_scales", n_scales), ("n_filters", n_filters), ("analysis_size", analysis_size),
                            ("synthesis_size", synthesis_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("analysis_size", analysis_size), ("synthesis_size", synthesis_size)):
            if value % 2 == 0:
                raise ValueError(f"{name} must be odd (centred 'same' filters), got {value}")
        self.n_scales = n_scales
        self.exact_reconstruction = exact_reconstruction
        autocovariance = band_noise_autocovariance(n_scales, analysis_size - 1)
        self.scales = nn.ModuleList(
            LearnletScale(n_filters, analysis_size, synthesis_size, exact_reconstruction, autocovariance[j])
            for j in range(n_scales))
        row, column = _low_pass_kernels()
        self.register_buffer("low_pass_row", row, persistent=False)
        self.register_buffer("low_pass_column", column, persistent=False)

    def forward(self, image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[1] != 1:
            raise ValueError("image must be [B, 1, y, x]")
        noise = sigma.reshape(-1, 1, 1, 1).to(image.dtype)
        details, coarse = pyramid(image, self.n_scales, self.low_pass_row, self.low_pass_column)
        denoised: list[torch.Tensor] = []
        for j, scale in enumerate(self.scales):
            denoised.append(scale(details[j], noise))
        return collapse(denoised, coarse)


class LearnletsPrior(nn.Module):
    """Learnlets as the image net of an unrolled network: real ``[B, in_channels, y, x]`` -> ``[B, out_channels,
    y, x]`` buffer update (XPDNet and NC-PDNet add it to their buffer).

    The input is the buffer and the data-term gradient as real/imaginary channels. A 1x1 convolution mixes them into
    ``n_mixed`` channels (initially 1 per complex buffer image: image minus a small step times the gradient, one
    real and one imaginary channel each), Learnlets shared by the channels denoise each of them with its own learned
    noise level ``sigma_c = exp(log_sigma_c)`` (initially ``sigma``, in network units), and a second 1x1 convolution
    of the denoised channels and the input gives the update: initially ``denoised - buffer``, one learned proximal
    gradient step ``x <- D(x - step * gradient)``.
    """

    def __init__(self, in_channels: int, out_channels: int, n_mixed: int | None = None, sigma: float = 0.05,
                 step: float = 0.5, **learnlets_kwargs: int | bool) -> None:
        super().__init__()
        if in_channels % 2 or out_channels % 2 or out_channels >= in_channels:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be even complex "
                             "channel counts with out_channels < in_channels (buffer + gradient in, buffer out)")
        if not sigma > 0 or not math.isfinite(sigma):
            raise ValueError(f"sigma must be a positive finite noise level, got {sigma!r}")
        n_mixed = out_channels if n_mixed is None else n_mixed
        if n_mixed < 1:
            raise ValueError(f"n_mixed must be >= 1, got {n_mixed}")
        self.n_mixed = n_mixed
        self.mix = nn.Conv2d(in_channels, n_mixed, 1)
        self.denoiser = Learnlets(**learnlets_kwargs)  # type: ignore[arg-type]
        self.log_sigma = nn.Parameter(torch.full((n_mixed,), math.log(sigma)))
        self.out = nn.Conv2d(n_mixed + in_channels, out_channels, 1)
        self._init_as_proximal_step(in_channels, out_channels, step)

    @torch.no_grad()
    def _init_as_proximal_step(self, in_channels: int, out_channels: int, step: float) -> None:
        """Mixed channel c = buffer channel c - step * gradient (same part); update = denoised - buffer; the rest
        small random, so that gradients reach every weight."""
        n_in, n_out = in_channels // 2, out_channels // 2
        for conv in (self.mix, self.out):
            nn.init.normal_(conv.weight, std=1e-3)
            nn.init.zeros_(conv.bias)
        for c in range(min(self.n_mixed, out_channels)):
            part, index = divmod(c, n_out)  # real parts first, then imaginary parts
            self.mix.weight[c, part * n_in + index] = 1.0
            self.mix.weight[c, part * n_in + n_in - 1] = -step  # the gradient is the last complex input channel
            self.out.weight[c, c] = 1.0
            self.out.weight[c, self.n_mixed + part * n_in + index] = -1.0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, height, width = features.shape[0], features.shape[-2], features.shape[-1]
        mixed = self.mix(features)
        sigma = torch.exp(self.log_sigma).unsqueeze(0).expand(batch, self.n_mixed).reshape(-1)
        denoised = self.denoiser(mixed.reshape(batch * self.n_mixed, 1, height, width), sigma)
        denoised = denoised.reshape(batch, self.n_mixed, height, width)
        return self.out(torch.cat([denoised, features], dim=1))
