"""What every output format says about an image: who made it, and how to window and store its magnitudes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mrdserve.service.engine.result import ImageRole, ReconResult

UINT16_MAX = 65535


def describe(result: ReconResult) -> str:
    """``<artifact> <version>`` for a learned image, ``classical <method> (fallback: <reason>)`` otherwise; a
    posterior image says what it is and how it was made (``ReconResult.note``)."""
    if result.role is not ImageRole.reconstruction:
        return f"{result.role.title}: {result.note}" if result.note else result.role.title
    if result.is_learned:
        return f"{result.artifact} {result.version}" if result.version else str(result.artifact)
    text = f"classical {result.maker}"
    return f"{text} (fallback: {result.fallback_reason})" if result.fallback_reason else text


@dataclass(frozen=True)
class Window:
    """Display window (centre, width) in image units; 0..top covers all but the brightest few pixels."""

    center: float
    width: float


def display_window(images: Sequence[np.ndarray], upper_percentile: float = 99.5) -> Window:
    """A window from 0 to a high percentile of all magnitudes, so a few bright pixels do not flatten it."""
    values = np.concatenate([np.ravel(np.asarray(image, dtype=np.float64)) for image in images]) if images \
        else np.zeros(0)
    values = values[np.isfinite(values)]
    top = float(np.percentile(values, upper_percentile)) if values.size else 0.0
    if top <= 0:
        top = float(values.max()) if values.size and values.max() > 0 else 1.0
    return Window(center=top / 2.0, width=top)


def uint16_slope(images: Sequence[np.ndarray]) -> float:
    """Data units per stored step so that the series maximum fills the 16-bit range (all precision kept)."""
    peak = max((float(np.nanmax(image)) for image in images if np.size(image)), default=0.0)
    return peak / UINT16_MAX if np.isfinite(peak) and peak > 0 else 1.0


def to_uint16(image: np.ndarray, slope: float) -> np.ndarray:
    """Store a non-negative magnitude image as uint16 steps of ``slope`` (NaN and negatives become 0)."""
    scaled = np.nan_to_num(np.asarray(image, dtype=np.float64) / slope, nan=0.0, posinf=UINT16_MAX)
    return np.clip(np.round(scaled), 0, UINT16_MAX).astype(np.uint16)
