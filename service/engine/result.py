"""What a reconstruction produces for one sample, handed to the outputs (ISMRMRD images, DICOM, NIfTI, PNG)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.engine.choice import CLASSICAL


class ImageRole(StrEnum):
    """What an image shows: the reconstruction, or the posterior mean or per-pixel standard deviation of the
    samples a DSM prior drew for it (``service.posterior``). Each role is its own series in every output."""

    reconstruction = "reconstruction"
    posterior_mean = "posterior-mean"
    posterior_std = "posterior-std"

    @property
    def series_offset(self) -> int:
        """Added to the series index (MRD ``image_series_index``) and the DICOM series number."""
        return list(ImageRole).index(self)

    @property
    def data_role(self) -> str:
        """The ISMRMRD meta ``DataRole``."""
        return {"reconstruction": "Image", "posterior-mean": "PosteriorMean", "posterior-std": "PosteriorStd"}[self]

    @property
    def title(self) -> str:  # type: ignore[override]  # str.title() is not used on roles
        """Words for series descriptions (which they lead: DICOM keeps 64 characters) and image comments."""
        return {"reconstruction": "", "posterior-mean": "posterior mean",
                "posterior-std": "uncertainty map (posterior SD)"}[self]


@dataclass
class ReconResult:
    """A magnitude image ``[(z,) y, x]`` (float32, recon space, data units) and where it came from.

    ``label`` names the maker: ``<artifact>-<version>`` for a learned model, ``classical:<method>`` for the
    classical path, whose ``method`` names the classical method used; ``fallback_reason`` says why no artifact
    was used (None when one was). ``timings`` holds seconds per stage (ingest, preparation, queue, inference,
    output) for metrics and logs. ``role`` says what the image shows; a posterior image's ``note`` says how it was
    made (prior, samples drawn, whether the time budget cut the sampling short); ``derived`` holds the posterior
    images made for this reconstruction, if any were asked for, and ``posterior_error`` why they were not.
    """

    image: np.ndarray
    sample: KSpaceSample
    label: str
    artifact: str | None = None
    version: str | None = None
    fallback_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    method: str | None = None
    role: ImageRole = ImageRole.reconstruction
    note: str | None = None
    derived: list[ReconResult] = field(default_factory=list)
    posterior_error: str | None = None  # why the posterior images asked for were not made

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

    def posterior(self, role: ImageRole, image: np.ndarray, note: str) -> ReconResult:
        """A posterior image (``role``) of this result's sample, made by the same maker as far as labels go."""
        return replace(self, image=image, role=role, note=note, derived=[], timings={}, posterior_error=None)


def with_derived(results: list[ReconResult]) -> list[ReconResult]:
    """The results, then every posterior image they carry, ordered by role (one series per role)."""
    extra = [d for result in results for d in result.derived]
    return list(results) + sorted(extra, key=lambda r: r.role.series_offset)
