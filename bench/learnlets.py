"""Learnlets vs wavelets vs U-Net: PSNR gain of denoising held-out MR magnitude images inside and outside the noise
range seen in training (Ramzi et al. 2020, "Wavelets in the deep learning era"; Ramzi's thesis ch. 6.1).

Data: the head phantoms of ``models.data.phantoms`` (one family; intensities in [0, 1], the unit of sigma).
Training: ``phantom_2d`` of seeds 0..N-1 (128 x 128), random crops, white Gaussian noise with sigma uniform in the
training range (default [0, 0.1]). Held out: ``phantom_2d`` of seeds 1000.. (new pose, textures and detail; never
seen in training) and, as a second family never trained on, axial slices of ``phantom_3d`` (seed 2000: extruded
ellipsoids, 3D textures). Test sigmas 0.02, 0.05, 0.08 (inside) and 0.15, 0.2, 0.3 (outside the training range).

Methods, all scored side by side on the same noisy images: Learnlets (exact reconstruction, 5 scales, 11x11
analysis / 13x13 synthesis, given sigma); undecimated bi-orthogonal wavelet hard thresholding as the Learnlets
paper's baseline (its code calls ISAP's ``mr_filter`` with transform 24, the undecimated (bi-)orthogonal transform,
5 scales, hard thresholding at 3 sigma, which ISAP raises to 4 sigma on the finest scale; here PyWavelets'
stationary transform with CDF 9/7 ``bior4.4``, 5 levels, thresholds ``3 sigma_j``, ``4 sigma_j`` on the finest
level, ``sigma_j`` each band's exact noise level, the coarse band kept); and a residual U-Net
(``models.nets.unet.UNet``, filters 16-32-64-128, blind: it is not given sigma, as the paper's U-Net) trained on the
same data with the same steps, batch, crops, loss (L2) and Adam learning rate. Score: PSNR (peak 1) of the denoised
minus PSNR of the noisy image, averaged over the held-out images.

Budget (one torch thread: on these shared 2-core machines two threads ran a training step 10-20x slower): the
default (the thesis's 256 Learnlets filters, 2000 steps of 8 crops of 64 x 64, 16 + 6 held-out images) takes about
2 hours; ``--quick`` (32 filters, 800 steps of 8 crops of 64 x 64, 8 + 4 held-out images) about 5-12 minutes,
depending on the other load. Writes ``table.md``, ``results.json`` and ``gain.png`` to ``bench/out/learnlets/``;
the last line holds the headline figures (means over the inside and outside sigmas, phantom_2d test set).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrdserve.models.data.phantoms import phantom_3d
from mrdserve.models.nets.learnlets import Learnlets
from mrdserve.models.nets.unet import UNet
from mrdserve.models.training.denoising import DenoisingConfig, SigmaBlind, phantom_images, train_denoiser

OUT = Path(__file__).resolve().parent / "out" / "learnlets"
SIGMAS_IN = (0.02, 0.05, 0.08)
SIGMAS_OUT = (0.15, 0.2, 0.3)
WAVELET = "bior4.4"
WAVELET_LEVELS = 5
K_SIGMA, K_SIGMA_FINEST = 3.0, 4.0
METHODS = ("learnlets", "wavelet", "unet")


@dataclass(frozen=True)
class Setup:
    n_filters: int
    steps: int
    batch_size: int
    patch_size: int
    n_train: int
    n_test: int
    n_test_3d: int
    lr: float


DEFAULT = Setup(n_filters=256, steps=2000, batch_size=8, patch_size=64, n_train=64, n_test=16, n_test_3d=6, lr=1e-3)
QUICK = Setup(n_filters=32, steps=800, batch_size=8, patch_size=64, n_train=32, n_test=8, n_test_3d=4, lr=2e-3)


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """PSNR in dB with peak 1 (the phantoms' range)."""
    return float(10 * math.log10(1.0 / max(np.mean((estimate - clean) ** 2), 1e-20)))


class WaveletDenoiser:
    """Hard thresholding of the stationary (undecimated) ``bior4.4`` transform: ``k sigma_j`` per band, ``k = 3``
    and 4 on the finest level, ``sigma_j`` the band's noise level for unit white noise, measured exactly with an
    impulse (the transform is circular), coarse band kept."""

    def __init__(self, levels: int = WAVELET_LEVELS) -> None:
        import pywt

        self.pywt = pywt
        self.levels = levels
        impulse = np.zeros((512, 512))
        impulse[256, 256] = 1.0
        bands = pywt.swt2(impulse, WAVELET, level=levels, trim_approx=True)[1:]  # coarsest level first
        self.band_norms = [[float(np.sqrt(np.sum(band**2))) for band in level] for level in bands]

    def __call__(self, noisy: np.ndarray, sigma: float) -> np.ndarray:
        multiple = 2**self.levels
        height, width = noisy.shape
        padded = np.pad(noisy, ((0, -height % multiple), (0, -width % multiple)), mode="symmetric")
        coefficients = self.pywt.swt2(padded, WAVELET, level=self.levels, trim_approx=True)
        out = [coefficients[0]]
        for index, (level, norms) in enumerate(zip(coefficients[1:], self.band_norms, strict=True)):
            k = K_SIGMA_FINEST if index == self.levels - 1 else K_SIGMA
            out.append(tuple(self.pywt.threshold(band, k * sigma * norm, mode="hard")
                             for band, norm in zip(level, norms, strict=True)))
        return self.pywt.iswt2(out, WAVELET)[:height, :width]


def test_sets(setup: Setup) -> dict[str, np.ndarray]:
    """Held-out clean images: phantom_2d seeds 1000.. and axial slices of a phantom_3d volume (seed 2000)."""
    sets = {"phantom_2d": phantom_images(range(1000, 1000 + setup.n_test), 128)[:, 0].numpy().astype(np.float64)}
    if setup.n_test_3d:
        volume = phantom_3d((2 * setup.n_test_3d + 4, 128, 128), seed=2000).numpy().astype(np.float64)
        sets["phantom_3d_slices"] = volume[2 : 2 + 2 * setup.n_test_3d : 2]
    return sets


def train(setup: Setup, sigma_range: tuple[float, float], seed: int) -> tuple[dict[str, torch.nn.Module], dict]:
    """Learnlets and the blind U-Net, each trained by ``train_denoiser`` under the same configuration."""
    config = DenoisingConfig(steps=setup.steps, batch_size=setup.batch_size, patch_size=setup.patch_size,
                             image_size=128, train_seeds=(0, setup.n_train), sigma_range=sigma_range, loss="l2",
                             lr=setup.lr, seed=seed)
    images = phantom_images(range(*config.train_seeds), config.image_size)
    torch.manual_seed(seed)
    models = {"learnlets": Learnlets(n_filters=setup.n_filters),
              "unet": SigmaBlind(UNet(1, 1, filters=[16, 32, 64, 128], residual=True))}
    log: dict[str, dict] = {}
    for name, model in models.items():
        start = time.perf_counter()

        def report(step: int, loss: float, name: str = name, start: float = start) -> None:
            if (step + 1) % max(1, setup.steps // 5) == 0:
                print(f"  {name:<10} step {step + 1:5d}/{setup.steps}  loss {loss:.3e}  "
                      f"{time.perf_counter() - start:6.0f} s", flush=True)

        losses = train_denoiser(model, config, images=images, on_step=report)
        log[name] = {"parameters": sum(p.numel() for p in model.parameters()),
                     "train_s": time.perf_counter() - start, "final_loss": float(np.mean(losses[-20:]))}
    return models, log


def evaluate(models: dict[str, torch.nn.Module], sets: dict[str, np.ndarray], seed: int) -> dict:
    """PSNR of noisy and denoised images: ``results[set][sigma][method] = mean gain (dB)``, plus noisy PSNR."""
    wavelet = WaveletDenoiser()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, clean_images in sets.items():
        results[set_name] = {}
        for sigma in (*SIGMAS_IN, *SIGMAS_OUT):
            rng = np.random.default_rng([seed, round(1e4 * sigma)])
            noisy = clean_images + sigma * rng.standard_normal(clean_images.shape)
            noisy_psnr = [psnr(n, c) for n, c in zip(noisy, clean_images, strict=True)]
            batch = torch.from_numpy(noisy).float().unsqueeze(1)
            sigmas = torch.full((batch.shape[0],), sigma)
            estimates = {"wavelet": np.stack([wavelet(n, sigma) for n in noisy])}
            with torch.inference_mode():
                for name in ("learnlets", "unet"):
                    estimates[name] = models[name](batch, sigmas)[:, 0].double().numpy()
            row = {"noisy_psnr": float(np.mean(noisy_psnr))}
            for name in METHODS:
                gains = [psnr(e, c) - p for e, c, p in zip(estimates[name], clean_images, noisy_psnr, strict=True)]
                row[name] = float(np.mean(gains))
            results[set_name][f"{sigma:g}"] = row
    return results


def markdown(results: dict, sigma_range: tuple[float, float]) -> str:
    lines = []
    for set_name, rows in results.items():
        lines += [f"### {set_name}: PSNR gain over the noisy image (dB), training sigma in "
                  f"[{sigma_range[0]:g}, {sigma_range[1]:g}]", "",
                  "| sigma | range | noisy PSNR | Learnlets | wavelets | U-Net |", "|---|---|---|---|---|---|"]
        for sigma, row in rows.items():
            where = "in" if float(sigma) <= sigma_range[1] and float(sigma) >= sigma_range[0] else "out"
            lines.append(f"| {sigma} | {where} | {row['noisy_psnr']:.2f} | {row['learnlets']:+.2f} | "
                         f"{row['wavelet']:+.2f} | {row['unet']:+.2f} |")
        lines.append("")
    return "\n".join(lines)


def means(rows: dict[str, dict[str, float]], sigmas: tuple[float, ...]) -> dict[str, float]:
    return {name: float(np.mean([rows[f"{s:g}"][name] for s in sigmas])) for name in METHODS}


def plot(results: dict, sigma_range: tuple[float, float], path: Path) -> Path:
    """PSNR gain against sigma per method and test set (matplotlib when installed, else a plain PIL chart)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _plot_pil(results, sigma_range, path)
    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for axis, (set_name, rows) in zip(axes[0], results.items(), strict=True):
        sigmas = [float(s) for s in rows]
        axis.axvspan(*sigma_range, color="0.9", label="training range")
        for name in METHODS:
            axis.plot(sigmas, [rows[s][name] for s in rows], marker="o", label=name)
        axis.set(title=set_name, xlabel="noise sigma", ylabel="PSNR gain (dB)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _plot_pil(results: dict, sigma_range: tuple[float, float], path: Path) -> Path:
    from PIL import Image, ImageDraw

    colours = {"learnlets": (31, 119, 180), "wavelet": (255, 127, 14), "unet": (44, 160, 44)}
    width, height, margin = 420, 320, 50
    canvas = Image.new("RGB", (width * len(results), height), "white")
    draw = ImageDraw.Draw(canvas)
    all_gains = [row[m] for rows in results.values() for row in rows.values() for m in METHODS]
    low, high = min(min(all_gains), 0.0), max(all_gains)
    top_sigma = max(float(s) for rows in results.values() for s in rows)
    for panel, (set_name, rows) in enumerate(results.items()):
        left = panel * width

        def xy(sigma: float, gain: float, left: int = left) -> tuple[float, float]:
            return (left + margin + (width - 2 * margin) * sigma / top_sigma,
                    height - margin - (height - 2 * margin) * (gain - low) / max(high - low, 1e-9))

        shade = [xy(sigma_range[0], high), xy(min(sigma_range[1], top_sigma), low)]
        draw.rectangle([shade[0], shade[1]], fill=(235, 235, 235))
        draw.line([xy(0, low), xy(top_sigma, low)], fill="black")
        draw.line([xy(0, low), xy(0, high)], fill="black")
        draw.line([xy(0, 0), xy(top_sigma, 0)], fill=(180, 180, 180))
        draw.text((left + margin, 10), f"{set_name}: PSNR gain (dB) vs sigma", fill="black")
        draw.text((left + margin - 40, xy(0, high)[1]), f"{high:.1f}", fill="black")
        draw.text((left + margin - 40, xy(0, low)[1] - 10), f"{low:.1f}", fill="black")
        draw.text((xy(top_sigma, low)[0] - 20, height - margin + 5), f"{top_sigma:g}", fill="black")
        for index, name in enumerate(METHODS):
            points = [xy(float(s), row[name]) for s, row in rows.items()]
            draw.line(points, fill=colours[name], width=2)
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colours[name])
            draw.text((left + width - margin - 80, margin + 14 * index), name, fill=colours[name])
    canvas.save(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 filters, 800 steps of 8 crops of 64x64 (5-12 min)")
    parser.add_argument("--steps", type=int, help="override the training steps (both networks)")
    parser.add_argument("--filters", type=int, help="override the Learnlets filter count per scale")
    parser.add_argument("--sigma-max", type=float, default=0.1, help="top of the training sigma range (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see the budget)")
    parser.add_argument("--output", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup = QUICK if args.quick else DEFAULT
    if args.steps is not None or args.filters is not None:
        setup = Setup(**{**setup.__dict__, **({"steps": args.steps} if args.steps is not None else {}),
                         **({"n_filters": args.filters} if args.filters is not None else {})})
    sigma_range = (0.0, args.sigma_max)
    if not all(s > sigma_range[1] for s in SIGMAS_OUT) or not all(s <= sigma_range[1] for s in SIGMAS_IN):
        parser.error(f"--sigma-max must lie in [{max(SIGMAS_IN)}, {min(SIGMAS_OUT)})")
    start = time.perf_counter()
    print(f"setup: {setup} training sigma in {sigma_range}", flush=True)
    sets = test_sets(setup)
    models, log = train(setup, sigma_range, args.seed)
    results = evaluate(models, sets, args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    table = markdown(results, sigma_range)
    (args.output / "table.md").write_text(table + "\n")
    figure = plot(results, sigma_range, args.output / "gain.png")
    inside, outside = means(results["phantom_2d"], SIGMAS_IN), means(results["phantom_2d"], SIGMAS_OUT)
    summary = {"setup": setup.__dict__, "sigma_range": list(sigma_range), "sigmas_in": SIGMAS_IN,
               "sigmas_out": SIGMAS_OUT, "training": log, "results": results, "mean_gain_in": inside,
               "mean_gain_out": outside, "wall_s": time.perf_counter() - start}
    (args.output / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(table)
    for name, entry in log.items():
        print(f"{name}: {entry['parameters']:,} parameters, trained in {entry['train_s']:.0f} s, "
              f"final loss {entry['final_loss']:.3e}")
    beats = inside["learnlets"] > inside["wavelet"]
    drop = {name: inside[name] - outside[name] for name in METHODS}
    graceful = outside["learnlets"] > outside["unet"]
    print(f"claim 1 (Learnlets beat wavelets inside the training range): {'holds' if beats else 'does not hold'} "
          f"({inside['learnlets']:+.2f} vs {inside['wavelet']:+.2f} dB)")
    print(f"claim 2 (Learnlets degrade more gracefully than the U-Net outside it): "
          f"{'holds' if graceful else 'does not hold'} (outside: {outside['learnlets']:+.2f} vs "
          f"{outside['unet']:+.2f} dB; drop from inside: {drop['learnlets']:.2f} vs {drop['unet']:.2f} dB)")
    print(f"wrote {args.output / 'table.md'}, {args.output / 'results.json'}, {figure}; "
          f"{time.perf_counter() - start:.0f} s in all")
    print(" ".join([*(f"{name}_gain_in_db={inside[name]:.2f}" for name in METHODS),
                    *(f"{name}_gain_out_db={outside[name]:.2f}" for name in METHODS)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
