"""Training of the score prior by residual denoising score matching (AR-DAE), on synthetic complex phantoms.

The loss of Lim et al. (AR-DAE, ICML 2020) as Ramzi et al. use it for MRI (NeurIPS 2020 workshop "Denoising
score-matching for uncertainty quantification in inverse problems"; thesis ch. 6.2): for a clean image x, a noise
level sigma drawn from N(0, s^2) per sample and white noise eps (each real and imaginary component),

    L = E || sigma s(x + sigma eps, sigma) + eps ||^2,

minimised when s is the score of the images smoothed at |sigma| (Vincent 2011), optimised with Adam. Images are
complex head phantoms with smooth phase (``models.data.phantoms.complex_phantom_2d``), each normalised to
max |x| = 1 (the prior's intensity convention; ``intensity_jitter`` then multiplies it by a random factor in
[1 - j, 1 + j] so that the sampler's intensity estimate need not be exact), flipped left-right and given a
random global phase and conjugation at random. Phantoms of several matrices are cropped to ``crop`` so one
batch mixes the pixel scales of those matrices at the cost of the smallest.

``train_score_network`` runs (and resumes) a training and returns the checkpoint dict; ``save_score_checkpoint``
and ``load_score_checkpoint`` write and read it atomically. ``python -m mrdserve.models.training.dsm --help``
trains from the command line (the demo prior: ``--checkpoint DIR/score.pt --max-minutes 20``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrdserve.models.data.phantoms import complex_phantom_2d
from mrdserve.models.nets.registry import build_network
from mrdserve.models.training.checkpoint import atomic_torch_save, git_commit, read_checked

SCORE_CHECKPOINT_FORMAT = "mrdserve-score-checkpoint/1"
NETWORK_NAME = "score"
INTENSITY_CONVENTION = "complex image normalised to max |x| = 1 (one phantom per image), before a random factor " \
                       "in [1 - intensity_jitter, 1 + intensity_jitter]"


@dataclass(frozen=True)
class DSMConfig:
    """What a score-prior training is: data, noise levels, optimiser, network and budget.

    matrices, crop: phantom matrices in the bank (``n_phantoms`` each) and the square crop trained on.
    phantom_seed_start: training phantoms use seeds ``start + i`` (matrix k: ``start + k n_phantoms + i``);
        ``validation_phantoms`` held-out seeds lie just below ``start``.
    sigma_scale: s, the noise level's distribution N(0, s^2) (AR-DAE).
    steps, max_seconds: stop at ``steps`` or after ``max_seconds`` of CPU time (``time.process_time``, all
        threads; steadier than wall time on a shared machine) spent training, resumed runs included (None: none).
    checkpoint_every: steps between checkpoints (when a checkpoint path is given).
    """

    matrices: tuple[int, ...] = (64, 96)
    crop: int = 64
    n_phantoms: int = 1024
    phantom_seed_start: int = 1_000_000
    validation_phantoms: int = 8
    sigma_scale: float = 0.3
    intensity_jitter: float = 0.1
    batch_size: int = 16
    steps: int = 5000
    max_seconds: float | None = None
    lr: float = 1e-3
    network: dict[str, Any] = field(default_factory=lambda: {"n_filters": 16, "n_scales": 4, "lipschitz": 2.0,
                                                                "sigma_data": 0.35})
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 50

    def __post_init__(self) -> None:
        if not self.matrices or any(isinstance(m, bool) or not isinstance(m, int) or m < self.crop
                                    for m in self.matrices):
            raise ValueError(f"matrices must be integers >= crop ({self.crop}), got {self.matrices!r}")
        for name in ("crop", "n_phantoms", "batch_size", "steps", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("sigma_scale", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 <= self.intensity_jitter < 1:
            raise ValueError(f"intensity_jitter must lie in [0, 1), got {self.intensity_jitter!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be None or positive, got {self.max_seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["matrices"] = list(self.matrices)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DSMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DSM config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        if "matrices" in values:
            values["matrices"] = tuple(values["matrices"])
        return cls(**values)

    def training_seeds(self, matrix_index: int) -> range:
        first = self.phantom_seed_start + matrix_index * self.n_phantoms
        return range(first, first + self.n_phantoms)

    def validation_seeds(self) -> range:
        return range(self.phantom_seed_start - self.validation_phantoms, self.phantom_seed_start)


def normalised_phantom(matrix: int, seed: int) -> torch.Tensor:
    """A complex phantom ``[matrix, matrix]`` scaled to max |x| = 1 (the prior's intensity convention)."""
    image = complex_phantom_2d((matrix, matrix), seed=seed)
    return image / image.abs().max().clamp_min(1e-12)


class PhantomBank:
    """The training phantoms (one stack per matrix) and batches of random crops, flips, phases and intensities."""

    def __init__(self, config: DSMConfig) -> None:
        self.config = config
        self.stacks = [torch.stack([normalised_phantom(m, s) for s in config.training_seeds(k)])
                       for k, m in enumerate(config.matrices)]
        self.image_q99 = float(np.median([np.quantile(stack.abs().reshape(stack.shape[0], -1).numpy(), 0.99, axis=1)
                                          for stack in self.stacks]))

    def batch(self, generator: torch.Generator) -> torch.Tensor:
        """``[batch, 2, crop, crop]`` clean training images (real and imaginary channels)."""
        config = self.config
        images = []
        for _ in range(config.batch_size):
            stack = self.stacks[int(torch.randint(len(self.stacks), (1,), generator=generator))]
            image = stack[int(torch.randint(stack.shape[0], (1,), generator=generator))]
            top, left = (int(torch.randint(image.shape[i] - config.crop + 1, (1,), generator=generator))
                         for i in (0, 1))
            image = image[top:top + config.crop, left:left + config.crop]
            draws = torch.rand(4, generator=generator)
            if draws[0] < 0.5:
                image = image.flip(-1)
            if draws[1] < 0.5:
                image = image.conj()
            gain = 1.0 + config.intensity_jitter * (2 * float(draws[2]) - 1)
            image = image * gain * torch.polar(torch.ones(()), 2 * math.pi * draws[3])
            images.append(torch.stack([image.real, image.imag]))
        return torch.stack(images)


def dsm_loss(network: torch.nn.Module, clean: torch.Tensor, sigma_scale: float,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Residual DSM loss mean (sigma s(x + sigma eps, sigma) + eps)^2 with sigma ~ N(0, s^2) per sample."""
    sigma = (sigma_scale * torch.randn(clean.shape[0], generator=generator)).to(clean.device, clean.dtype)
    noise = torch.randn(clean.shape, generator=generator).to(clean.device, clean.dtype)
    noisy = clean + sigma.reshape(-1, 1, 1, 1) * noise
    return (sigma.reshape(-1, 1, 1, 1) * network(noisy, sigma) + noise).square().mean()


def denoising_psnr(network: torch.nn.Module, config: DSMConfig, sigmas: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2),
                   device: torch.device | str = "cpu") -> dict[str, dict[str, float]]:
    """Held-out check: PSNR (dB, peak 1) of x + sigma eps and of its Tweedie denoising x + sigma^2 s, per sigma,
    on the validation phantoms at every training matrix (full size)."""
    generator = torch.Generator().manual_seed(12345)
    was_training = network.training
    network.eval()
    results: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for matrix in config.matrices:
            clean = torch.stack([normalised_phantom(matrix, s) for s in config.validation_seeds()])
            clean = torch.stack([clean.real, clean.imag], dim=1).to(device)
            for sigma in sigmas:
                noisy = clean + sigma * torch.randn(clean.shape, generator=generator).to(device)
                level = torch.full((clean.shape[0],), sigma, device=device)
                denoised = noisy + sigma**2 * network(noisy, level)
                key = f"{matrix}/sigma={sigma:g}"
                results[key] = {"noisy_db": _psnr(noisy, clean), "denoised_db": _psnr(denoised, clean)}
    network.train(was_training)
    return results


def _psnr(estimate: torch.Tensor, clean: torch.Tensor) -> float:
    error = (estimate - clean).square().sum(1).mean()  # squared complex error per pixel
    return float(10 * torch.log10(1.0 / error))


def save_score_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file next to ``path`` and ``os.replace`` it into place (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(checkpoint, path)
    return path


def load_score_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a score-prior checkpoint and check its format (ValueError naming the file otherwise)."""
    return read_checked(path, SCORE_CHECKPOINT_FORMAT, map_location, what="score checkpoint")


def build_score_network(checkpoint: dict[str, Any]) -> torch.nn.Module:
    """The checkpoint's score network with its weights, in eval mode, on the CPU."""
    network = build_network(checkpoint["network"]["name"], **checkpoint["network"]["kwargs"])
    network.load_state_dict(checkpoint["model_state"])
    return network.eval()


def _checkpoint(config: DSMConfig, network: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                generator: torch.Generator, losses: list[float], seconds: float, image_q99: float,
                validation: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "format": SCORE_CHECKPOINT_FORMAT,
        "network": {"name": NETWORK_NAME, "kwargs": dict(config.network)},
        "model_state": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "optimizer_state": optimizer.state_dict(),
        "generator_state": generator.get_state(),
        "step": int(step),
        "config": config.to_dict(),
        "seed": int(config.seed),
        "losses": [float(v) for v in losses],
        "train_cpu_seconds": float(seconds),
        "data": {"kind": "synthetic", "generator": "models.data.phantoms.complex_phantom_2d",
                 "description": f"{config.n_phantoms} complex head phantoms per matrix {list(config.matrices)}, "
                                f"cropped to {config.crop}, seeds from {config.phantom_seed_start}",
                 "training_seeds": [[s.start, s.stop] for s in map(config.training_seeds,
                                                                    range(len(config.matrices)))],
                 "validation_seeds": [config.validation_seeds().start, config.validation_seeds().stop]},
        "intensity": {"convention": INTENSITY_CONVENTION, "max_abs": 1.0, "image_q99": float(image_q99),
                      "intensity_jitter": float(config.intensity_jitter)},
        "validation": validation or {},
        "git_commit": git_commit(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


_RESUMABLE = ("steps", "max_seconds", "checkpoint_every", "log_every")  # may change between resumed runs


def train_score_network(config: DSMConfig, device: torch.device | str = "cpu",
                        checkpoint_path: str | Path | None = None, resume: bool = True,
                        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or resume, from ``checkpoint_path`` when it exists and ``resume``) and return the checkpoint dict.

    With ``checkpoint_path`` the checkpoint is written every ``config.checkpoint_every`` steps and at the end.
    The held-out denoising check (``denoising_psnr``) is stored under ``validation`` at the end.
    """
    device = torch.device(device)
    torch.manual_seed(config.seed)
    network = build_network(NETWORK_NAME, **config.network).to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    step, losses, seconds = 0, [], 0.0
    if checkpoint_path is not None and resume and Path(checkpoint_path).is_file():
        previous = load_score_checkpoint(checkpoint_path)
        changed = sorted(k for k, v in config.to_dict().items()
                         if k not in _RESUMABLE and previous["config"].get(k) != v)
        if changed:
            raise ValueError(f"{checkpoint_path}: its config differs in {', '.join(changed)}; resume with the same "
                             "data, network and optimiser settings or pass resume=False")
        network.load_state_dict(previous["model_state"])
        optimizer.load_state_dict(previous["optimizer_state"])
        generator.set_state(previous["generator_state"])
        step, losses, seconds = int(previous["step"]), list(previous["losses"]), float(previous["train_cpu_seconds"])
        if log:
            log(f"resumed at step {step} ({seconds:.0f} CPU s trained)")
    bank = PhantomBank(config)
    started = time.process_time() - seconds

    def save() -> dict[str, Any]:
        checkpoint = _checkpoint(config, network, optimizer, step, generator, losses,
                                 time.process_time() - started, bank.image_q99, None)
        if checkpoint_path is not None:
            save_score_checkpoint(checkpoint, checkpoint_path)
        return checkpoint

    while step < config.steps:
        if config.max_seconds is not None and time.process_time() - started > config.max_seconds:
            break
        clean = bank.batch(generator).to(device)
        loss = dsm_loss(network, clean, config.sigma_scale, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
        if log and step % config.log_every == 0:
            recent = losses[-config.log_every:]
            log(f"step {step} loss {sum(recent) / len(recent):.4f} ({time.process_time() - started:.0f} CPU s)")
        if checkpoint_path is not None and step % config.checkpoint_every == 0:
            save()
    checkpoint = save()
    checkpoint["validation"] = {"denoising": denoising_psnr(network, config, device=device)}
    if checkpoint_path is not None:
        save_score_checkpoint(checkpoint, checkpoint_path)
    return checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a score prior by residual denoising score matching on "
                                                 "synthetic complex phantoms (resumes from --checkpoint).")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, written periodically and resumed")
    parser.add_argument("--steps", type=int, default=DSMConfig.steps)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop after this much CPU time (minutes)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared machine)")
    parser.add_argument("--batch-size", type=int, default=DSMConfig.batch_size)
    parser.add_argument("--n-phantoms", type=int, default=DSMConfig.n_phantoms)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = DSMConfig(steps=args.steps, batch_size=args.batch_size, n_phantoms=args.n_phantoms,
                       max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes)
    checkpoint = train_score_network(config, device=args.device, checkpoint_path=args.checkpoint,
                                     log=lambda m: print(m, flush=True))
    for key, value in checkpoint["validation"]["denoising"].items():
        print(f"{key}: noisy {value['noisy_db']:.2f} dB -> denoised {value['denoised_db']:.2f} dB", flush=True)
    print(f"steps={checkpoint['step']} train_cpu_seconds={checkpoint['train_cpu_seconds']:.0f} "
          f"final_loss={np.mean(checkpoint['losses'][-100:]):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
