"""What a reconstruction produces for one sample, handed to the outputs (ISMRMRD images, DICOM, NIfTI, PNG)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mrdserve.models.data.sample import KSpaceSample


@dataclass
class ReconResult:
    """A magnitude image ``[(z,) y, x]`` (float32, recon space, data units) and where it came from.

    ``label`` names the maker: ``<artifact>-<version>`` for a learned model, ``classical:<method>`` for the
    fallback; ``fallback_reason`` says why no artifact was used (None when one was). ``timings`` holds seconds per
    stage (ingest, preparation, queue, inference, output) for metrics and logs.
    """

    image: np.ndarray
    sample: KSpaceSample
    label: str
    artifact: str | None = None
    version: str | None = None
    fallback_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def is_learned(self) -> bool:
        return self.artifact is not None
