"""PNG output: 8-bit greyscale previews of magnitude images, windowed robustly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


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
