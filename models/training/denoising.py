"""Training of image denoisers (Learnlets, or any module ``denoiser(image, sigma)``) on synthetic MR magnitude images,
and the denoiser checkpoint that ``mrdserve denoise`` reads.

As in the Learnlets paper (Ramzi et al. 2020), the denoiser learns from clean images with additive white Gaussian
noise whose standard deviation is drawn uniformly in a training range for every example, so that one network serves
every noise level; the clean images are the head phantoms of ``models.data.phantoms`` (intensities in [0, 1], the
unit of sigma), cropped at random with random flips and transposes, with an L2 or L1 loss and Adam.

Checkpoint (``DENOISER_FORMAT``): a ``torch.save`` dict loadable with ``weights_only=True`` holding the registry
name and keyword arguments of the network (``models.nets.registry``), its state dict, the training configuration
and the final loss; ``load_denoiser`` rebuilds the network from it.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mrdserve.models.training.checkpoint import atomic_torch_save, read_checked

DENOISER_FORMAT = "mrdserve-denoiser/1"
LOSS_NAMES = ("l2", "l1")


@dataclass(frozen=True)
class DenoisingConfig:
    """What ``train_denoiser`` does: ``steps`` Adam steps on batches of ``batch_size`` random ``patch_size`` crops
    of phantoms ``phantom_2d((image_size, image_size), seed)`` for seeds in ``range(*train_seeds)``, with noise
    sigma drawn uniformly in ``sigma_range`` (image units: phantoms are in [0, 1])."""

    steps: int = 1000
    batch_size: int = 8
    patch_size: int = 64
    image_size: int = 128
    train_seeds: tuple[int, int] = (0, 64)
    sigma_range: tuple[float, float] = (0.0, 0.2)
    loss: str = "l2"
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"

    def check(self) -> None:
        """Raise ValueError naming the first field out of range."""
        for name in ("steps", "batch_size", "patch_size", "image_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if self.patch_size > self.image_size:
            raise ValueError(f"patch_size ({self.patch_size}) must not exceed image_size ({self.image_size})")
        if self.image_size < 8:
            raise ValueError(f"image_size: phantoms need at least 8 pixels, got {self.image_size}")
        first, stop = self.train_seeds
        if stop <= first:
            raise ValueError(f"train_seeds: need a non-empty range [first, stop), got {self.train_seeds}")
        low, high = self.sigma_range
        if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low <= high):
            raise ValueError(f"sigma_range: need finite 0 <= low <= high, got {self.sigma_range}")
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"loss: expected one of {', '.join(LOSS_NAMES)}, got {self.loss!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: must be a positive number, got {self.lr!r}")


class SigmaBlind(nn.Module):
    """A network of the image alone (e.g. a U-Net) as a denoiser ``(image, sigma) -> image`` that ignores sigma:
    a blind denoiser, as the U-Net baseline of the Learnlets paper."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def phantom_images(seeds: Sequence[int], size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Clean magnitude phantoms ``[N, 1, size, size]`` in [0, 1], one per seed."""
    from mrdserve.models.data.phantoms import phantom_2d

    return torch.stack([phantom_2d((size, size), seed=int(seed), device=device) for seed in seeds]).unsqueeze(1)


def noisy_batch(images: torch.Tensor, batch_size: int, patch_size: int, sigma_range: tuple[float, float],
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(noisy, clean, sigma)``: random crops of random images, randomly flipped/transposed, plus Gaussian noise
    of a per-example sigma uniform in ``sigma_range``; ``sigma`` is ``[batch_size]``."""
    n, _, height, width = images.shape
    crops = []
    for _ in range(batch_size):
        index = int(torch.randint(n, (1,), generator=generator))
        top = int(torch.randint(height - patch_size + 1, (1,), generator=generator))
        left = int(torch.randint(width - patch_size + 1, (1,), generator=generator))
        crop = images[index, :, top : top + patch_size, left : left + patch_size]
        flips = torch.rand(3, generator=generator)
        if flips[0] < 0.5:
            crop = crop.flip(-1)
        if flips[1] < 0.5:
            crop = crop.flip(-2)
        if flips[2] < 0.5:
            crop = crop.transpose(-1, -2)
        crops.append(crop)
    clean = torch.stack(crops)
    low, high = sigma_range
    sigma = low + (high - low) * torch.rand(batch_size, generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    noisy = clean + sigma.reshape(-1, 1, 1, 1) * noise.to(clean.device)
    return noisy, clean, sigma.to(clean.device)


def _loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return nn.functional.mse_loss if name == "l2" else nn.functional.l1_loss


def train_denoiser(model: nn.Module, config: DenoisingConfig, images: torch.Tensor | None = None,
                   on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``model(image, sigma)`` in place under ``config``; returns the loss of every step.

    ``images`` (clean ``[N, 1, H, W]``) replaces the phantoms of ``config.train_seeds`` when given (then
    ``image_size`` is not used). ``on_step(step, loss)`` is called after each step (progress, logging).
    """
    config.check()
    device = torch.device(config.device)
    if images is None:
        images = phantom_images(range(*config.train_seeds), config.image_size)
    if images.dim() != 4 or images.shape[1] != 1 or min(images.shape[-2:]) < config.patch_size:
        raise ValueError(f"images must be [N, 1, H, W] with H, W >= patch_size, got {tuple(images.shape)}")
    images = images.to(device)
    generator = torch.Generator().manual_seed(config.seed)  # crops, flips, sigmas and noise: all from this seed
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_function = _loss_function(config.loss)
    losses: list[float] = []
    for step in range(config.steps):
        noisy, clean, sigma = noisy_batch(images, config.batch_size, config.patch_size, config.sigma_range,
                                          generator)
        loss = loss_function(model(noisy, sigma), clean)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses


def save_denoiser(path: str | Path, model: nn.Module, network: dict[str, Any], config: DenoisingConfig,
                  metrics: dict[str, float] | None = None) -> Path:
    """Write the denoiser checkpoint of ``model`` (built as ``build_network(network["name"],
    **network["kwargs"])``) atomically to ``path``."""
    path = Path(path)
    if set(network) != {"name", "kwargs"}:
        raise ValueError("network must be {'name': registry name, 'kwargs': keyword arguments}")
    checkpoint = {
        "format": DENOISER_FORMAT,
        "network": {"name": str(network["name"]), "kwargs": dict(network["kwargs"])},
        "model_state": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "config": {key: list(value) if isinstance(value, tuple) else value
                   for key, value in dataclasses.asdict(config).items()},
        "sigma_range": [float(v) for v in config.sigma_range],
        "intensity": "sigma in the units of the image; trained on images in [0, 1]",
        "metrics": {key: float(value) for key, value in (metrics or {}).items()},
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(checkpoint, path)
    return path


def load_denoiser(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The network of a denoiser checkpoint (eval mode, on ``device``) and the checkpoint dict; ValueError with
    the reason when the file is not one."""
    from mrdserve.models.nets.registry import build_network

    checkpoint = read_checked(path, DENOISER_FORMAT, device, what="model")
    network = checkpoint["network"]
    model = build_network(network["name"], **network["kwargs"])
    try:
        model.load_state_dict(checkpoint["model_state"])
    except RuntimeError as exc:
        raise ValueError(f"model {str(path)!r}: weights do not fit network {network['name']!r}: {exc}") from exc
    return model.to(device).eval(), checkpoint
