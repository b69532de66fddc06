"""The validation envelope of an artifact: where, on held-out data, it beats the best classical method.

A grid of cells (matrix, coils, acceleration, noise level) is simulated with seeds disjoint from training and
sent through the serving reader (ISMRMRD file with a noise scan and 2x readout oversampling for Cartesian data);
in each cell the exported TorchScript model and every classical method reconstruct the same slices, and the
scale-fitted PSNR / SSIM are recorded. A cell is served when the model's PSNR beats the best classical PSNR and
its SSIM is not lower. The manifest keeps the axes (bin edges), the cells and their figures; the runtime serves
an artifact automatically only inside served cells (``envelope_cell``/``envelope_refusal``), and the artifact's
acceptance constraints shrink to the validated ranges.

The noise axis is ``models.data.envelope.relative_noise``, measured the same way here and at serving.
"""

from __future__ import annotations

import itertools
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrdserve.models.data.baseline import CLASSICAL_METHODS, classical_reconstruction
from mrdserve.models.data.envelope import bin_edges, relative_noise
from mrdserve.models.data.ismrmrd_io import read_ismrmrd
from mrdserve.models.data.metrics import fitted_scores
from mrdserve.models.data.prepare import collate, output_to_image, prepare_sample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.simulate import read_ground_truth, simulate_to_file

ENVELOPE_SEED = 7_000_001  # held-out simulation seeds start here (training uses other seeds)
SERVE_MARGIN_DB = 0.25
CALIBRATION_LINES = 16  # Cartesian cells acquire at least this many ACS lines (8% of the lines at 256)


@dataclass(frozen=True)
class Grid:
    """Grid points per axis and slices per cell; ``noise`` are simulator noise levels (relative); ``content``:
    the phantoms' image content ("mixed": a textured anatomy and a piecewise-constant object in every cell)."""

    matrix: tuple[int, ...]
    coils: tuple[int, ...]
    acceleration: tuple[float, ...]
    noise: tuple[float, ...]
    slices: int = 2
    content: str = "textured"


GRIDS = {
    "standard": Grid(matrix=(96, 160, 256), coils=(2, 8, 16), acceleration=(1.0, 2.0, 4.0, 8.0),
                     noise=(0.005, 0.03), content="mixed"),
    # non-Cartesian cells cost a density estimate and NUFFT-based solvers each: one slice per cell
    "standard-noncartesian": Grid(matrix=(96, 160, 256), coils=(2, 8, 16), acceleration=(2.0, 4.0, 8.0),
                                  noise=(0.005, 0.03), slices=1),
    "quick": Grid(matrix=(64,), coils=(4,), acceleration=(1.0, 4.0), noise=(0.01,), slices=1),
}


def grid_for(name: str, manifest: dict[str, Any]) -> Grid:
    """The named grid for the artifact's kind of data (``standard`` has a non-Cartesian variant)."""
    if name == "standard" and manifest["constraints"]["trajectory"][0] != "cartesian":
        return GRIDS["standard-noncartesian"]
    return GRIDS[name]


def _scores(reference: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    return fitted_scores(reference, image)[:2]


def serves(psnr: float, ssim: float, classical_psnr: float, classical_ssim: float) -> bool:
    """A cell is served when the model beats the best classical method by ``SERVE_MARGIN_DB`` and is not less
    structurally similar (the margin covers the spread of a few held-out slices per cell)."""
    return psnr >= classical_psnr + SERVE_MARGIN_DB and ssim >= classical_ssim


def calibration_fraction(matrix: int, acceleration: float) -> float:
    """ACS fraction of a Cartesian cell: at least ``CALIBRATION_LINES`` lines (8% at 256), but never so many that
    R is unreachable (96 lines at R=8 leave room for 9)."""
    return min(max(0.08, CALIBRATION_LINES / matrix), 0.75 / acceleration)


def _held_out_slices(task: str, trajectory: str, matrix: int, coils: int, acceleration: float, noise: float,
                     slices: int, seed: int, content: str) -> list[tuple[KSpaceSample, np.ndarray]]:
    """Simulated slices through the serving reader with their ground-truth magnitudes."""
    with tempfile.TemporaryDirectory(prefix="mrdserve-envelope-") as tmp:
        path = Path(tmp) / "cell.h5"
        simulate_to_file(path, trajectory=trajectory, coils=coils, acceleration=acceleration, matrix=matrix,
                         slices=slices, noise=noise, seed=seed, noise_scan=True,
                         center_fraction=calibration_fraction(matrix, acceleration), content=content)
        _, samples = read_ismrmrd(path)
        truth = read_ground_truth(path).abs().numpy().astype(np.float64)
    return list(zip(samples, truth, strict=True))


def _model_image(model: Any, manifest: dict[str, Any], sample: KSpaceSample) -> np.ndarray:
    preparation = manifest["preparation"]
    prepared = prepare_sample(sample, preparation["name"], preparation["params"])
    inputs = collate([prepared])
    with torch.no_grad():
        output = model(*[inputs[spec["name"]] for spec in manifest["inputs"]])
    return output_to_image(output, prepared.scale, prepared.recon_matrix)[0].numpy().astype(np.float64)


def _score_cell(model: Any, manifest: dict[str, Any], held_out: list[tuple[KSpaceSample, np.ndarray]],
                methods: tuple[str, ...]) -> dict[str, Any]:
    """The model's and the best classical method's mean scores over a cell's slices, and whether it is served."""
    model_scores, classical_scores = [], {m: [] for m in methods}
    for sample, truth in held_out:
        model_scores.append(_scores(truth, _model_image(model, manifest, sample)))
        for method in methods:
            try:
                image = classical_reconstruction(sample, method).image.numpy().astype(np.float64)
            except ValueError:  # a method that does not apply to these data (e.g. GRAPPA at R=1)
                continue
            classical_scores[method].append(_scores(truth, image))
    model_psnr, model_ssim = (float(v) for v in np.mean(model_scores, axis=0))
    means = {m: np.mean(s, axis=0) for m, s in classical_scores.items() if s}
    best = max(means, key=lambda m: means[m][0])
    best_psnr, best_ssim = (float(v) for v in means[best])
    return {"psnr": round(model_psnr, 3), "ssim": round(model_ssim, 4),
            "classical": {"method": best, "psnr": round(best_psnr, 3), "ssim": round(best_ssim, 4)},
            "serve": serves(model_psnr, model_ssim, best_psnr, best_ssim)}


def validate_envelope(artifact_dir: str | Path, manifest: dict[str, Any], grid: Grid) -> dict[str, Any]:
    """Run the grid for the artifact in ``artifact_dir`` (its ``model.ts``) and return the envelope entry."""
    task = manifest["task"]
    if task == "noncartesian3d":
        raise ValueError("validation grids cover 2D tasks; a noncartesian3d artifact is served only when named")
    trajectory = manifest["constraints"]["trajectory"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notice
        model = torch.jit.load(str(Path(artifact_dir) / "model.ts"), map_location="cpu").eval()
    methods = CLASSICAL_METHODS["cartesian" if trajectory == "cartesian" else "noncartesian"]
    accelerations = [a for a in grid.acceleration if trajectory == "cartesian" or a > 1.0]
    coil_counts = (1,) if task.endswith("singlecoil") else grid.coils
    cells: list[dict[str, Any]] = []
    measured_noise: dict[int, list[float]] = {i: [] for i in range(len(grid.noise))}
    points = itertools.product(grid.matrix, coil_counts, accelerations, enumerate(grid.noise))
    for seed, (matrix, coils, acceleration, (noise_index, noise)) in enumerate(points, start=ENVELOPE_SEED + 1):
        held_out = _held_out_slices(task, trajectory, matrix, coils, acceleration, noise, grid.slices, seed,
                                    grid.content)
        measured_noise[noise_index] += [relative_noise(sample) for sample, _ in held_out]
        cell = _score_cell(model, manifest, held_out, methods)
        cells.append({"matrix": matrix, "coils": coils, "acceleration": acceleration, "noise": noise_index,
                      "slices": len(held_out), **cell})
    # noise levels are stored in the order of their measured medians (cells refer to that rank)
    medians = [float(np.median(measured_noise[i])) for i in range(len(grid.noise))]
    order = sorted(range(len(grid.noise)), key=lambda i: medians[i])
    for cell in cells:
        cell["noise"] = order.index(cell["noise"])
    noise_points = [medians[i] for i in order]
    return {
        "reference": ("best of " + ", ".join(methods) + " per cell; scale-fitted PSNR/SSIM against the "
                      "simulated ground truth, held-out seeds through the ISMRMRD reader"),
        "rule": f"served where PSNR >= best classical PSNR + {SERVE_MARGIN_DB} dB and SSIM >= its SSIM",
        "axes": {
            "matrix": {"points": list(grid.matrix), "edges": bin_edges(grid.matrix, geometric=True)},
            "coils": {"points": list(grid.coils), "edges": bin_edges(grid.coils, geometric=True)},
            "acceleration": {"points": accelerations, "edges": bin_edges(accelerations, geometric=False)},
            "noise": {"points": noise_points, "edges": [0.0, *bin_edges(noise_points, geometric=True)[1:]],
                      "simulated_levels": [grid.noise[i] for i in order]},
        },
        "cells": cells,
    }




def write_envelope(artifact_dir: str | Path, grid: Grid | str) -> dict[str, Any]:
    """Validate the artifact in ``artifact_dir`` on ``grid``, store the envelope in its manifest and narrow its
    acceptance constraints to the validated ranges; returns the updated manifest."""
    import json

    from mrdserve.models.data.envelope import envelope_constraints
    from mrdserve.models.data.manifest_schema import MANIFEST_FILE, load_manifest, validate_manifest

    directory = Path(artifact_dir)
    manifest = load_manifest(directory)
    envelope = validate_envelope(directory, manifest, grid if isinstance(grid, Grid) else grid_for(grid, manifest))
    manifest["validation"]["envelope"] = envelope
    manifest["constraints"] = envelope_constraints(manifest["constraints"], envelope)
    validate_manifest(manifest)
    staging = directory / f".{MANIFEST_FILE}.tmp"
    staging.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    staging.chmod(0o644)
    staging.replace(directory / MANIFEST_FILE)
    return manifest


def summary(envelope: dict[str, Any]) -> str:
    """One line per cell: where the artifact is served and by how much it wins or loses."""
    lines = [f"{'matrix':>6} {'coils':>5} {'R':>4} {'noise':>5} {'model dB':>9} {'classical':>22} serve"]
    for cell in envelope["cells"]:
        classical = cell["classical"]
        lines.append(f"{cell['matrix']:>6} {cell['coils']:>5} {cell['acceleration']:>4g} {cell['noise']:>5} "
                     f"{cell['psnr']:>9.2f} {classical['method'] + ' ' + format(classical['psnr'], '.2f'):>22} "
                     f"{'yes' if cell['serve'] else 'no'}")
    return "\n".join(lines)
