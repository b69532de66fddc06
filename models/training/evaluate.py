"""Evaluation of a network against the classical baselines: per-volume PSNR/SSIM/NMSE, CSV table, PNG figures.

Used by the training loop's validation and by ``mrdserve evaluate``. Everything is compared in the data's units
on the recon grid: the network output through ``output_to_image`` (times the preparation's scale, cropped),
the ground truth as ``target * scale``, and the baselines from ``models.data.baseline.classical_reconstruction``
on the very same k-space samples. Slices are grouped into volumes by their file (synthetic examples are
volumes of one slice), and metrics are computed per volume as fastMRI does.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from mrdserve.models.data import metrics as metric_functions
from mrdserve.models.data.baseline import classical_reconstruction
from mrdserve.models.data.prepare import output_to_image
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.training.datasets import SyntheticDataset, TrainingExample, collate_examples

# Classical baselines by report name -> classical_reconstruction method ("rss" is the Cartesian adjoint).
BASELINES = {"zero-filled": "adjoint", "cg-sense": "cg-sense", "l1-wavelet": "l1-wavelet"}
METRICS = ("psnr", "ssim", "nmse")


@dataclass
class VolumeImages:
    """Magnitude images ``[slices, *R]`` of one volume: ground truth, model and each baseline."""

    ground_truth: list[np.ndarray] = field(default_factory=list)
    reconstructions: dict[str, list[np.ndarray]] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Mean metrics (model and baselines), per-volume metrics, and the images when asked for."""

    metrics: dict[str, Any]
    images: dict[str, VolumeImages]


def volume_key(meta: dict[str, Any]) -> str:
    """Which volume an example belongs to: its file, or its index for synthetic examples."""
    if meta.get("file"):
        return str(meta["file"])
    return f"{meta.get('source', 'example')}-{int(meta.get('index', 0)):05d}"


def _unwrap(dataset: Dataset, index: int) -> tuple[Dataset, int]:
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, int(dataset.indices[index])
    return dataset, index


def sample_of(dataset: Dataset, index: int) -> KSpaceSample | None:
    """The undersampled k-space sample behind example ``index`` (what the baselines reconstruct), or None."""
    base, position = _unwrap(dataset, index)
    if hasattr(base, "sample"):
        return base.sample(position)
    if isinstance(base, SyntheticDataset):
        return base.sample(position)
    return _file_sample(base, position)


def _file_sample(dataset: Any, index: int) -> KSpaceSample | None:
    """Sample of a FastMRIDataset/IsmrmrdDataset example, as their ``__getitem__`` builds it."""
    from mrdserve.models.training import datasets

    number, position = dataset.index[index]
    if hasattr(dataset, "_volume"):
        sample = dataset._volume(number).samples[position]
    elif hasattr(dataset, "_file"):
        sample = dataset._file(number)[0][position]
    else:
        return None
    mask_func = getattr(dataset, "mask_func", None)
    if mask_func is not None and sample.is_cartesian and datasets._fully_sampled(sample):
        sample = datasets._undersample(sample, mask_func, datasets._index_seed(dataset.seed, index))
    return sample


def image_metrics(ground_truth: np.ndarray, image: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM and NMSE of a volume ``[slices, *R]`` (fastMRI style: data range of the whole volume)."""
    return {"psnr": metric_functions.psnr(ground_truth, image), "ssim": metric_functions.ssim(ground_truth, image),
            "nmse": metric_functions.nmse(ground_truth, image)}


def _mean(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    means = {name: float(np.mean([row[name] for row in rows])) for name in METRICS}
    means["n_volumes"] = len(rows)
    return means


def _baseline_images(sample: KSpaceSample, device: torch.device) -> dict[str, np.ndarray]:
    images = {}
    for name, method in BASELINES.items():
        try:
            images[name] = classical_reconstruction(sample, method, device=device).image.cpu().numpy()
        except ValueError as exc:  # e.g. CG-SENSE without calibration lines: that baseline does not apply
            warnings.warn(f"baseline {name} skipped: {exc}", stacklevel=2)
    return images


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: Dataset, indices: Sequence[int], device: torch.device | str = "cpu",
             baseline_cache: dict[str, dict[str, dict[str, float]]] | None = None,
             keep_images: bool = False, amp: bool = False) -> Evaluation:
    """Evaluate ``model`` and the classical baselines on ``dataset[indices]``, grouped into volumes.

    ``baseline_cache`` (volume -> baseline -> metrics) is read and filled: baselines of a cached volume are not
    recomputed unless ``keep_images`` asks for their images.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    volumes: dict[str, VolumeImages] = {}
    cache = baseline_cache if baseline_cache is not None else {}
    try:
        for index in indices:
            example: TrainingExample = dataset[int(index)]
            batch = collate_examples([example]).to(device)
            with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                output = model(**batch.inputs)
            image = output_to_image(output.float(), batch.scale, batch.recon_matrix)[0].cpu().numpy()
            truth = (batch.target[0] * batch.scale[0]).cpu().numpy()
            key = volume_key(example.meta)
            volume = volumes.setdefault(key, VolumeImages())
            volume.ground_truth.append(truth)
            volume.reconstructions.setdefault("model", []).append(image)
            if key in cache and not keep_images:
                continue
            sample = sample_of(dataset, int(index))
            if sample is None:
                continue
            for name, baseline in _baseline_images(sample, device).items():
                volume.reconstructions.setdefault(name, []).append(baseline)
    finally:
        model.train(was_training)
    per_volume = []
    for key, volume in volumes.items():
        truth = np.stack(volume.ground_truth)
        row = {"volume": key, "model": image_metrics(truth, np.stack(volume.reconstructions["model"]))}
        if key not in cache:
            cache[key] = {name: image_metrics(truth, np.stack(images))
                          for name, images in volume.reconstructions.items()
                          if name != "model" and len(images) == len(volume.ground_truth)}
        row["baselines"] = cache[key]
        per_volume.append(row)
    names = sorted({name for row in per_volume for name in row["baselines"]})
    metrics = {"model": _mean([row["model"] for row in per_volume]),
               "baselines": {name: _mean([row["baselines"][name] for row in per_volume
                                          if name in row["baselines"]]) for name in names},
               "per_volume": per_volume}
    return Evaluation(metrics=metrics, images=volumes if keep_images else {})


def metrics_table(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (method, psnr, ssim, nmse, n_volumes): the model first, then each baseline."""
    rows = [{"method": "model", **metrics["model"]}]
    rows += [{"method": name, **values} for name, values in metrics["baselines"].items()]
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of ``metrics_table`` rows."""
    lines = [f"{'method':<14}{'PSNR (dB)':>11}{'SSIM':>9}{'NMSE':>11}{'volumes':>9}"]
    for row in rows:
        lines.append(f"{row['method']:<14}{row.get('psnr', math.nan):>11.2f}{row.get('ssim', math.nan):>9.4f}"
                     f"{row.get('nmse', math.nan):>11.5f}{int(row.get('n_volumes', 0)):>9d}")
    return "\n".join(lines)


def write_csv(metrics: dict[str, Any], path: str | Path) -> Path:
    """Per-volume metrics of every method plus the mean rows as CSV (volume, method, psnr, ssim, nmse)."""
    path = Path(path)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["volume", "method", *METRICS])
        for row in metrics["per_volume"]:
            writer.writerow([row["volume"], "model", *(f"{row['model'][m]:.6g}" for m in METRICS)])
            for name, values in row["baselines"].items():
                writer.writerow([row["volume"], name, *(f"{values[m]:.6g}" for m in METRICS)])
        for row in metrics_table(metrics):
            writer.writerow(["mean", row["method"], *(f"{row.get(m, math.nan):.6g}" for m in METRICS)])
    return path


def _to_uint8(image: np.ndarray, top: float) -> np.ndarray:
    return (np.clip(image / top, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_figures(images: dict[str, VolumeImages], directory: str | Path, max_slices: int = 3,
                  error_gain: float = 5.0) -> list[Path]:
    """PNG per slice (up to ``max_slices``): top row ground truth + reconstructions, bottom row error maps
    ``|recon - truth|`` amplified ``error_gain`` times; the same grey scale (truth's 99.5th percentile) for all."""
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for key, volume in images.items():
        for number, truth in enumerate(volume.ground_truth):
            if len(written) >= max_slices:
                return written
            truth = truth if truth.ndim == 2 else truth[truth.shape[0] // 2]  # 3D: the middle partition
            top = float(np.percentile(truth, 99.5)) or 1.0
            recons = [(name, images_[number]) for name, images_ in volume.reconstructions.items()
                      if number < len(images_)]
            recons = [(name, image if image.ndim == 2 else image[image.shape[0] // 2]) for name, image in recons]
            upper = [truth] + [image for _, image in recons]
            lower = [np.zeros_like(truth)] + [error_gain * np.abs(image - truth) for _, image in recons]
            grid = np.concatenate([np.concatenate([_to_uint8(x, top) for x in row], axis=1)
                                   for row in (upper, lower)], axis=0)
            path = directory / f"{Path(key).stem}_slice{number:03d}.png"
            Image.fromarray(grid, mode="L").save(path)
            (directory / f"{Path(key).stem}_slice{number:03d}.txt").write_text(
                "columns: ground truth, " + ", ".join(name for name, _ in recons)
                + f"\nrows: images; |error| x {error_gain:g}\n")
            written.append(path)
    return written
