"""PNG output: 8-bit greyscale previews of magnitude images, windowed robustly, one file per 2D image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mrdserve.service.engine.result import ImageRole, ReconResult


def to_uint8(image: np.ndarray, upper_percentile: float = 99.5) -> np.ndarray:
    """Scale a magnitude image to 0..255, clipping at a high percentile so a few bright pixels do not win."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"a PNG holds one 2D image, got shape {image.shape}")
    top = float(np.percentile(image, upper_percentile)) if image.size else 0.0
    if not np.isfinite(top) or top <= 0:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.clip(np.round(255.0 * image / top), 0, 255).astype(np.uint8)


def write_png(image: np.ndarray, path: str | Path) -> Path:
    """Write one 2D magnitude image as an 8-bit greyscale PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)
    return path


def output_stem(result: ReconResult) -> str:
    """A file-name stem naming the image's indices and its maker (artifact label or classical method)."""
    i = result.sample.index
    maker = (result.method or result.label).replace("/", "_").replace(" ", "_")  # learned: name-version
    role = "" if result.role is ImageRole.reconstruction else f"_{result.role.value}"
    return f"slice{i.slice:03d}_contrast{i.contrast:02d}_rep{i.repetition:02d}_set{i.set:02d}_{maker}{role}"


def write_pngs(results: list[ReconResult], out_dir: Path) -> list[Path]:
    """One PNG preview per 2D image (per partition of a 3D volume); names say the indices and the maker."""
    out_dir = Path(out_dir)
    paths = []
    for result in results:
        stem = output_stem(result)
        if result.sample.index.phase:
            stem = f"{stem}_phase{result.sample.index.phase:02d}"
        if result.image.ndim == 3:
            paths += [write_png(plane, out_dir / f"{stem}_z{z:03d}.png") for z, plane in enumerate(result.image)]
        else:
            paths.append(write_png(result.image, out_dir / f"{stem}.png"))
    return paths
