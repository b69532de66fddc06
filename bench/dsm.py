"""DSM posterior sampling (Ramzi et al. 2020, thesis ch. 6.2) against zero-filling, CG-SENSE, l1-wavelet and XPDNet.

Held-out simulated multicoil Cartesian slices (``models.export.score_prior.held_out_case``: equispaced mask with 8%
ACS, 1% noise, ESPIRiT maps, seeds and phantoms unused in training) are sampled with the bundled score prior
(``service/priors/demo-score-0.1``, annealed HMC with the settings its manifest was validated with, and the
simulated noise level as the likelihood's, as prewhitened data would give it; ``--estimate-noise`` lets the
sampler estimate it from the data instead). Per slice:
samples per second, PSNR of the sample mean and of the individual samples, of zero-filling, CG-SENSE and
l1-wavelet (``models.data.baseline``) and of the bundled demo XPDNet (``service/artifacts/demo-xpdnet-*/model.ts``,
only at its training size 96; other matrices say so), all scale-fitted magnitudes against the ground truth, and the
Spearman rank correlation of the standard-deviation map with the mean's absolute error (all pixels, and inside the
head). Writes ``table.md``, ``results.json`` and ``panel.png`` (reference, zero-filled, CG-SENSE, XPDNet, mean,
std map, |error| x5 of the first slice) under ``bench/out/dsm/``.

Default budget: 2 slices at 96x96 with 8 coils, R=4, 16 samples each: about 7 minutes on 2 shared cores.
``--quick``: 1 slice at 64x64, 4 coils, 8 samples (about 2 minutes).

Run: ``.venv/bin/python bench/dsm.py [--quick]``. Last line: ``samples_per_s=.. mean_psnr_db=.. sample_psnr_db=..
zf_psnr_db=.. cg_psnr_db=.. l1_psnr_db=.. xpdnet_psnr_db=.. spearman_rho=.. spearman_rho_inside=..`` (means over
slices; xpdnet_psnr_db=nan where the matrix is not XPDNet's).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrdserve.models.data.baseline import classical_reconstruction  # noqa: E402
from mrdserve.models.data.metrics import psnr, scale_fit  # noqa: E402
from mrdserve.models.data.prepare import collate  # noqa: E402
from mrdserve.models.data.score_prior_artifact import load_score_prior  # noqa: E402
from mrdserve.models.export.score_prior import (  # noqa: E402
    held_out_case,
    posterior_figures,
    zero_filled_magnitude,
)
from mrdserve.models.physics.posterior_sampling import SamplerSettings, sample_posterior  # noqa: E402

PRIOR = ROOT / "service" / "priors" / "demo-score-0.1"
OUT = ROOT / "bench" / "out" / "dsm"
XPDNET_MATRIX = 96
FIRST_SEED = 5000


def _xpdnet() -> tuple[torch.jit.ScriptModule | None, str]:
    found = sorted((ROOT / "service" / "artifacts").glob("demo-xpdnet-*/model.ts"))
    if not found:
        return None, "no bundled demo XPDNet artifact"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(found[-1]), map_location="cpu").eval(), found[-1].parent.name


def _fitted(reference: np.ndarray, image: np.ndarray) -> float:
    return psnr(reference, scale_fit(reference, image))


def _tile(image: np.ndarray, top: float) -> Image.Image:
    return Image.fromarray((np.clip(image / max(top, 1e-12), 0, 1) * 255).astype(np.uint8))


def write_panel(path: Path, columns: list[tuple[str, np.ndarray, float]]) -> None:
    """A labelled row of grey-scale tiles (each scaled to its given top value), upsampled x3."""
    zoom, label = 3, 14
    height, width = (n * zoom for n in columns[0][1].shape)
    canvas = Image.new("L", (len(columns) * (width + 4), height + label), 0)
    draw = ImageDraw.Draw(canvas)
    for index, (title, image, top) in enumerate(columns):
        tile = _tile(image, top).resize((width, height), Image.NEAREST)
        canvas.paste(tile, (index * (width + 4), label))
        draw.text((index * (width + 4) + 2, 1), title, fill=255)
    canvas.save(path)


def run(args: argparse.Namespace) -> dict:
    score, manifest = load_score_prior(args.prior)
    settings = SamplerSettings.from_dict(manifest["sampler_settings"])
    xpdnet, xpdnet_name = _xpdnet()
    use_xpdnet = xpdnet is not None and args.matrix == XPDNET_MATRIX
    if not use_xpdnet:
        reason = xpdnet_name if xpdnet is None else f"matrix {args.matrix} is not its training size {XPDNET_MATRIX}"
        print(f"XPDNet skipped: {reason}")
    rows = []
    panel = None
    for index in range(args.slices):
        seed = args.seed + index
        case = held_out_case(args.matrix, args.coils, args.acceleration, seed)
        reference = case.ground_truth
        zero_filled = zero_filled_magnitude(case)
        noise_std = None if args.estimate_noise else case.noise_std
        result = sample_posterior(score, case.prepared.inputs, "cartesian-sense", args.samples, settings=settings,
                                  noise_std=noise_std, seed=index)
        row = posterior_figures(result, case, zero_filled) | {"seed": seed, "phantom_seed": case.phantom_seed}
        row["samples_per_s"] = args.samples / result.seconds
        row["seconds"] = result.seconds
        row["acceptance_rate"] = result.acceptance_rate
        cg = classical_reconstruction(case.sample, "cg-sense").image.numpy()
        l1 = classical_reconstruction(case.sample, "l1-wavelet").image.numpy()
        row["cg_psnr_db"], row["l1_psnr_db"] = _fitted(reference, cg), _fitted(reference, l1)
        xpd = np.full_like(reference, np.nan)
        if use_xpdnet:
            with torch.no_grad():
                out = xpdnet(*collate([case.prepared]).values())
            xpd = out[0].numpy() * float(case.prepared.scale)
            row["xpdnet_psnr_db"] = _fitted(reference, xpd)
        else:
            row["xpdnet_psnr_db"] = float("nan")
        rows.append(row)
        print(f"slice {index} (seed {seed}): mean {row['mean_psnr_db']:.2f} dB, samples {row['sample_psnr_db']:.2f}, "
              f"zero-filled {row['zf_psnr_db']:.2f}, CG-SENSE {row['cg_psnr_db']:.2f}, l1 {row['l1_psnr_db']:.2f}, "
              f"XPDNet {row['xpdnet_psnr_db']:.2f}; rho {row['spearman_rho']:.3f} (inside "
              f"{row['spearman_rho_inside']:.3f}); {row['samples_per_s']:.3f} samples/s", flush=True)
        if panel is None:
            mean = scale_fit(reference, result.mean.abs().numpy() * float(case.prepared.scale))
            std = result.std.numpy() * float(case.prepared.scale)
            top = float(reference.max())
            panel = [("reference", reference, top), ("zero-filled", scale_fit(reference, zero_filled), top),
                     ("CG-SENSE", scale_fit(reference, cg), top),
                     ("XPDNet" if use_xpdnet else "XPDNet n/a", scale_fit(reference, xpd) if use_xpdnet
                      else np.zeros_like(reference), top),
                     ("DSM mean", mean, top), ("std map", std, float(std.max())),
                     ("|error| x5", np.abs(mean - reference), top / 5)]
    keys = ("samples_per_s", "mean_psnr_db", "sample_psnr_db", "zf_psnr_db", "cg_psnr_db", "l1_psnr_db",
            "xpdnet_psnr_db", "spearman_rho", "spearman_rho_inside")
    summary = {key: float(np.mean([row[key] for row in rows])) for key in keys}
    args.out.mkdir(parents=True, exist_ok=True)
    write_panel(args.out / "panel.png", panel)
    table = ["| method | PSNR dB (mean over slices) |", "|---|---|"]
    for name, key in (("DSM sample mean", "mean_psnr_db"), ("DSM single samples", "sample_psnr_db"),
                      ("zero-filled", "zf_psnr_db"), ("CG-SENSE", "cg_psnr_db"), ("l1-wavelet", "l1_psnr_db"),
                      ("XPDNet (demo artifact)", "xpdnet_psnr_db")):
        table.append(f"| {name} | {summary[key]:.2f} |")
    table += ["", f"Spearman rho (std vs |error|): {summary['spearman_rho']:.3f} all pixels, "
                  f"{summary['spearman_rho_inside']:.3f} inside the head; {summary['samples_per_s']:.3f} samples/s",
              "", f"{args.slices} slice(s) {args.matrix}x{args.matrix}, {args.coils} coils, R={args.acceleration:g}, "
                  f"{args.samples} samples, noise {'estimated' if args.estimate_noise else 'known'}, prior "
                  f"{manifest['name']}-{manifest['version']}, settings "
                  f"{json.dumps(settings.to_dict())}"]
    text = "\n".join(table)
    print(text)
    (args.out / "table.md").write_text(text + "\n", encoding="utf-8")
    results = {"summary": summary, "slices": rows, "settings": settings.to_dict(),
               "case": {"matrix": args.matrix, "coils": args.coils, "acceleration": args.acceleration,
                        "samples": args.samples}, "xpdnet": xpdnet_name if use_xpdnet else None}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=Path, default=PRIOR, help="score-prior artifact directory")
    parser.add_argument("--matrix", type=int, default=96)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--acceleration", type=float, default=4.0)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=FIRST_SEED, help="simulation seed of the first slice")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared machine)")
    parser.add_argument("--quick", action="store_true", help="1 slice at 64x64, 4 coils, 8 samples")
    parser.add_argument("--estimate-noise", action="store_true",
                        help="let the sampler estimate the k-space noise (default: the simulated level, as after "
                             "prewhitening, as the prior's manifest was validated)")
    args = parser.parse_args(argv)
    if args.quick:
        args.matrix, args.coils, args.slices, args.samples = 64, 4, 1, 8
    torch.set_num_threads(args.threads)
    summary = run(args)
    print(" ".join(f"{key}={value:.4g}" for key, value in summary.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
