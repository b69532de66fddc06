"""What a reconstruction produces for one sample, handed to the outputs (ISMRMRD images, DICOM, NIfTI, PNG)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.engine.choice import CLASSICAL


@dataclass
class ReconResult:
    """A magnitude image ``[(z,) y, x]`` (float32, recon space, data units) and where it came from.

    ``label`` names the maker: ``<artifact>-<version>`` for a learned model, ``classical:<method>`` for the
    classical path, whose ``method`` names the classical method used; ``fallback_reason`` says why no artifact
    was used (None when one was). ``timings`` holds seconds per stage (ingest, preparation, queue, inference,
    output) for metrics and logs.
    """

    image: np.ndarray
    sample: KSpaceSample
    label: str
    artifact: str | None = None
    version: str | None = None
    fallback_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    method: str | None = None

    @classmethod
    def classical(cls, image: np.ndarray, sample: KSpaceSample, method: str,
                  fallback_reason: str | None) -> ReconResult:
        """The result of the classical path (``method`` as run, e.g. ``l1-wavelet``)."""
        return cls(image, sample, f"{CLASSICAL}:{method}", fallback_reason=fallback_reason, method=method)

    @property
    def maker(self) -> str:
        """What made the image, in a word: the artifact name, or the classical method (else the label)."""
        return self.artifact if self.artifact is not None else (self.method or self.label)

    @property
    def is_learned(self) -> bool:
        return self.artifact is not None
