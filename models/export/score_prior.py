"""Export of a trained score prior as an artifact the runtime can sample posteriors with, and its validation.

``export_score_prior`` writes ``<name>-<version>/`` with ``model.ts`` (TorchScript of the score network,
``(x [B, 2, y, x], sigma [B]) -> score``), ``model.onnx`` (opset 18, dynamic batch) and ``manifest.json``
(``"kind": "score-prior"``: network and kwargs, the sampler settings it was validated with, the intensity
convention, training provenance, validation figures, sha256 of every file, framework versions, intended use). It
checks that TorchScript and ONNX Runtime reproduce eager PyTorch on noisy phantoms at two batch sizes and refuses
to write anything otherwise (a hidden staging directory is renamed into place only after every check passed).
``models.data.score_prior_artifact.load_score_prior`` reads it back.

``posterior_validation`` is the check the manifest's figures come from: held-out simulated multicoil Cartesian
data (seed and phantom unused in training), prepared with "cartesian-sense", sampled with
``models.physics.posterior_sampling``: PSNR of the sample mean, of the samples and of zero-filling against the
ground truth, and the Spearman rank correlation of the standard-deviation map with the mean's absolute error.

``python -m mrdserve.models.export.score_prior CHECKPOINT -o DIR --name demo-score --version 0.1`` exports.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrdserve.models.data.manifest_schema import sha256_file
from mrdserve.models.data.metrics import psnr, scale_fit
from mrdserve.models.data.prepare import PreparedSample, prepare_sample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.score_prior_artifact import KIND, MANIFEST
from mrdserve.models.data.simulate import simulate_cartesian
from mrdserve.models.export.export import frameworks, publish
from mrdserve.models.physics.posterior_sampling import PosteriorResult, SamplerSettings, sample_posterior
from mrdserve.models.training.dsm import build_score_network, load_score_checkpoint, normalised_phantom

INTENDED_USE = ("research: uncertainty maps, not for diagnosis. Demonstration prior trained on synthetic phantoms "
                "only; not a medical device.")
VALIDATION_SEED = 424242  # simulation seed of the held-out validation slice (its phantom seed is derived from it)


class ScorePriorExportError(ValueError):
    """An export that was refused (failed equivalence, bad checkpoint, existing target)."""


@dataclass
class HeldOutCase:
    """A simulated slice, its preparation, its ground truth magnitude in data units and its k-space noise std per
    real component in prepared units (what prewhitening with a noise scan would tell the runtime)."""

    sample: KSpaceSample
    prepared: PreparedSample
    ground_truth: np.ndarray
    phantom_seed: int
    noise_std: float


def held_out_case(matrix: int = 64, n_coils: int = 4, acceleration: float = 4, seed: int = VALIDATION_SEED,
                  noise_level: float = 0.01) -> HeldOutCase:
    """One simulated multicoil Cartesian slice (equispaced R with 8% ACS, ESPIRiT maps), prepared."""
    sim = simulate_cartesian(matrix, n_coils=n_coils, acceleration=acceleration, n_slices=1, noise_level=noise_level,
                             readout_oversampling=1, with_noise_scan=False, seed=seed)
    sample = KSpaceSample(kspace=sim.kspace[0].contiguous(), matrix=sim.matrix, recon_matrix=sim.matrix,
                          trajectory_type="cartesian", mask=sim.mask[:, None], acs_mask=sim.acs[:, None],
                          acceleration=(round(sim.acceleration),))
    prepared = prepare_sample(sample, "cartesian-sense")
    phantom_seed = int(np.random.SeedSequence(int(np.random.SeedSequence(seed).generate_state(4)[0]))
                       .generate_state(1)[0])  # as models.data.simulate derives it (_seeds twice)
    noise_std = noise_level / math.sqrt(2) / float(prepared.scale)
    return HeldOutCase(sample, prepared, sim.ground_truth[0].abs().numpy(), phantom_seed, noise_std)


def _fitted_psnr(reference: np.ndarray, image: np.ndarray) -> float:
    return psnr(reference, scale_fit(reference, image))


def posterior_figures(result: PosteriorResult, case: HeldOutCase, zero_filled: np.ndarray) -> dict[str, float]:
    """PSNR (dB, scale-fitted magnitudes, peak of the reference) of the mean, of each sample (averaged) and of
    ``zero_filled``; Spearman rho of the std map with |mean - reference| over all pixels and inside the head."""
    from scipy.stats import spearmanr

    scale = float(case.prepared.scale)
    reference = case.ground_truth
    mean = result.mean.abs().cpu().numpy() * scale
    samples = result.samples.abs().cpu().numpy() * scale
    fitted_mean = scale_fit(reference, mean)
    error = np.abs(fitted_mean - reference)
    std = result.std.cpu().numpy()
    inside = reference > 0.05 * reference.max()
    return {
        "mean_psnr_db": psnr(reference, fitted_mean),
        "sample_psnr_db": float(np.mean([_fitted_psnr(reference, s) for s in samples])),
        "zf_psnr_db": _fitted_psnr(reference, zero_filled),
        "spearman_rho": float(spearmanr(std.ravel(), error.ravel()).statistic),
        "spearman_rho_inside": float(spearmanr(std[inside], error[inside]).statistic),
    }


def zero_filled_magnitude(case: HeldOutCase) -> np.ndarray:
    """|A^H y| (coil-combined zero-filled SENSE image) in data units."""
    from mrdserve.models.physics.kernels import sense_reduce

    inputs = case.prepared.inputs
    kspace = torch.complex(inputs["kspace"][..., 0], inputs["kspace"][..., 1])
    smaps = torch.complex(inputs["smaps"][..., 0], inputs["smaps"][..., 1])
    image = sense_reduce(kspace, smaps, inputs["mask"])[0, 0]
    return image.abs().numpy() * float(case.prepared.scale)


def posterior_validation(score: Any, settings: SamplerSettings, n_samples: int = 8, matrix: int = 96,
                         n_coils: int = 8, acceleration: float = 4, seed: int = VALIDATION_SEED,
                         device: torch.device | str = "cpu") -> dict[str, Any]:
    """Sample the held-out case and return its figures (``posterior_figures``), those of CG-SENSE and l1-wavelet
    (``models.data.baseline``, scale-fitted the same way) and the case's description."""
    from mrdserve.models.data.baseline import classical_reconstruction

    case = held_out_case(matrix, n_coils, acceleration, seed)
    result = sample_posterior(score, case.prepared.inputs, "cartesian-sense", n_samples, settings=settings,
                              noise_std=case.noise_std, seed=0, device=device)
    figures = posterior_figures(result, case, zero_filled_magnitude(case))
    for method in ("cg-sense", "l1-wavelet"):
        image = classical_reconstruction(case.sample, method).image.numpy()
        figures[f"{method.split('-')[0]}_psnr_db"] = _fitted_psnr(case.ground_truth, image)
    return figures | {
        "case": {"simulation": "models.data.simulate.simulate_cartesian", "matrix": matrix, "coils": n_coils,
                 "acceleration": acceleration, "mask": "equispaced_fraction, 8% ACS", "noise_level": 0.01,
                 "seed": seed, "phantom_seed": case.phantom_seed, "preparation": "cartesian-sense (ESPIRiT)",
                 "noise_std": "the simulated noise level (as after prewhitening), not estimated"},
        "n_samples": n_samples, "seconds": result.seconds, "acceptance_rate": result.acceptance_rate,
        "psnr": "scale-fitted magnitude, peak of the ground truth",
        "spearman": "std map vs |mean - ground truth| per pixel (all pixels; inside: |gt| > 5% of its max)",
    }


def _checkpoint(checkpoint: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(checkpoint, dict):
        return checkpoint
    try:
        return load_score_checkpoint(checkpoint)
    except ValueError as exc:
        raise ScorePriorExportError(str(exc)) from exc


def _examples(matrix: int) -> tuple[tuple[torch.Tensor, torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """(export example of batch 2, checks at batch 1 and 3): noisy held-out phantoms at three noise levels."""
    generator = torch.Generator().manual_seed(7)
    images = torch.stack([normalised_phantom(matrix, seed) for seed in (11, 12, 13)])
    clean = torch.stack([images.real, images.imag], dim=1)
    sigma = torch.tensor([0.3, 0.05, 0.01])
    noisy = clean + sigma.reshape(-1, 1, 1, 1) * torch.randn(clean.shape, generator=generator)
    return (noisy[:2], sigma[:2]), [(noisy[:1], sigma[:1]), (noisy, sigma)]


def _relative(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual.astype(np.float64) - expected) / max(np.linalg.norm(expected), 1e-12))


def _export_onnx(model: torch.nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> str:
    """Dynamo export, opset 18, weights inside; dynamic batch and (where it converts) dynamic matrix."""
    batch = torch.export.Dim("batch", min=1, max=64)

    def export(spatial: bool) -> None:
        image_axes: dict[int, Any] = {0: batch}
        if spatial:
            image_axes |= {2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example, str(path), dynamo=True, opset_version=18, external_data=False,
                              dynamic_shapes=(image_axes, {0: batch}), input_names=["x", "sigma"],
                              output_names=["score"], verbose=False, report=False)

    try:
        export(spatial=True)
        return "dynamic batch and matrix"
    except Exception:  # dynamic spatial axes are best effort
        export(spatial=False)
        return "dynamic batch; the matrix is fixed to the export example's"


def _verify(model: torch.nn.Module, scripted: Any, session: Any,
            checks: list[tuple[torch.Tensor, torch.Tensor]], tolerance: float) -> dict[str, Any]:
    result = {"torchscript_max_rel": 0.0, "onnx_max_rel": 0.0, "batches": [], "tolerance": tolerance}
    for x, sigma in checks:
        with torch.no_grad():
            expected = model(x, sigma).numpy()
            script_error = _relative(scripted(x, sigma).numpy(), expected)
        (onnx_out,) = session.run(None, {"x": x.numpy(), "sigma": sigma.numpy()})
        onnx_error = _relative(onnx_out, expected)
        result["batches"].append(int(x.shape[0]))
        result["torchscript_max_rel"] = max(result["torchscript_max_rel"], script_error)
        result["onnx_max_rel"] = max(result["onnx_max_rel"], onnx_error)
        if not script_error <= tolerance or not onnx_error <= tolerance:
            raise ScorePriorExportError(f"exported score differs from eager at batch {x.shape[0]}: TorchScript "
                                        f"{script_error:.2e}, ONNX Runtime {onnx_error:.2e} > {tolerance:.1e}; "
                                        "no artifact written")
    return result


def export_score_prior(checkpoint: dict[str, Any] | str | Path, out_dir: str | Path, name: str, version: str,
                       settings: SamplerSettings | None = None, validation: dict[str, Any] | None = None,
                       validate: bool = True, tolerance: float = 1e-4, overwrite: bool = False) -> Path:
    """Export the score-prior ``checkpoint`` (dict or file) to ``out_dir/<name>-<version>/``; returns that path.

    ``settings``: the sampler settings recorded (default ``SamplerSettings()`` with the checkpoint's
    ``image_q99``); with ``validate`` (and no ``validation`` given) ``posterior_validation`` runs with them on the
    exported TorchScript module, so the manifest's figures are those of what is served.
    """
    checkpoint = _checkpoint(checkpoint)
    target = Path(out_dir) / f"{name}-{version}"
    if target.exists() and not overwrite:
        raise ScorePriorExportError(f"artifact directory {target} already exists (pass overwrite to replace it)")
    intensity = dict(checkpoint["intensity"])
    if settings is None:
        settings = SamplerSettings(image_q99=round(float(intensity["image_q99"]), 4))
    model = build_score_network(checkpoint)
    example, checks = _examples(int(checkpoint["config"]["crop"]))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-{version}.", dir=out_dir))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation notices
            torch.jit.script(model).save(str(staging / "model.ts"))
            loaded = torch.jit.load(str(staging / "model.ts"), map_location="cpu").eval()
        onnx_axes = _export_onnx(model, example, staging / "model.onnx")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(str(staging / "model.onnx"), options,
                                               providers=["CPUExecutionProvider"])
        equivalence = _verify(model, loaded, session, checks, tolerance) | {"onnx_axes": onnx_axes}
        if validation is None and validate:
            validation = posterior_validation(loaded, settings)
        config = checkpoint["config"]
        losses = checkpoint.get("losses") or []
        manifest = {
            "name": name,
            "version": version,
            "kind": KIND,
            "network": {"name": checkpoint["network"]["name"], "kwargs": checkpoint["network"]["kwargs"],
                        "parameters": int(sum(p.numel() for p in model.parameters()))},
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["B", 2, "y", "x"],
                        "description": "image, real and imaginary channels, in the prior's intensity units"},
                       {"name": "sigma", "dtype": "float32", "shape": ["B"], "description": "noise level"}],
            "outputs": [{"name": "score", "dtype": "float32", "shape": ["B", 2, "y", "x"],
                         "description": "grad_x log p_sigma(x)"}],
            "sampler": "models.physics.posterior_sampling.sample_posterior (annealed HMC, Ramzi et al. 2020)",
            "sampler_settings": settings.to_dict(),
            "intensity": intensity,
            "training": {"steps": int(checkpoint["step"]), "cpu_seconds": checkpoint.get("train_cpu_seconds"),
                         "final_loss": float(np.mean(losses[-100:])) if losses else None,
                         "first_loss": float(np.mean(losses[:100])) if losses else None,
                         "loss": "residual DSM (AR-DAE), sigma ~ N(0, sigma_scale^2)", "config": config,
                         "data": checkpoint["data"], "seed": checkpoint["seed"],
                         "git_commit": checkpoint.get("git_commit"), "created": checkpoint.get("created")},
            "validation": {"denoising": (checkpoint.get("validation") or {}).get("denoising", {}),
                           "posterior": validation or {}},
            "equivalence": equivalence,
            "files": {f: sha256_file(staging / f) for f in ("model.ts", "model.onnx")},
            "frameworks": frameworks(),
            "intended_use": INTENDED_USE,
            "opset": 18,
        }
        publish(staging, target, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a score-prior checkpoint (models.training.dsm) as an "
                                                 "artifact: model.ts, model.onnx, manifest.json; validates it.")
    parser.add_argument("checkpoint")
    parser.add_argument("-o", "--out-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--settings", help="JSON object of SamplerSettings fields to record and validate with")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    checkpoint = _checkpoint(args.checkpoint)
    settings = None
    if args.settings:
        values = {"image_q99": round(float(checkpoint["intensity"]["image_q99"]), 4)} | json.loads(args.settings)
        settings = SamplerSettings.from_dict(values)
    path = export_score_prior(checkpoint, args.out_dir, args.name, args.version, settings=settings,
                              overwrite=args.overwrite)
    manifest = json.loads((path / MANIFEST).read_text())
    print(json.dumps(manifest["validation"], indent=2))
    print(f"exported {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
