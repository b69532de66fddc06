"""Uncertainty maps served beside the image: posterior samples drawn with a DSM score prior (thesis ch. 6.2).

A request asks for ``N`` posterior samples per slice (REST ``uncertainty=N``, MRD JSON parameter ``uncertainty``,
gadget property ``uncertainty``). After the slice's reconstruction, ``PosteriorEstimator`` prepares the slice as the
networks' preparation does, draws the samples by annealed HMC with the MRI likelihood and an exported score prior
(``models.physics.posterior_sampling``; the prior is a ``kind: score-prior`` artifact loaded from
``ServiceConfig.priors``), and turns their mean and per-pixel standard deviation into two images of the slice
(``ImageRole.posterior_mean`` and ``posterior_std``: series of their own in every output). Sampling is slow by
nature: each slice gets ``uncertainty_budget_s``; a cut-short run finishes with what it drew and says so in the
images' comments. The maps are for research (how much the data constrain each pixel), not for diagnosis.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mrdserve.models.data.prepare import PreparedSample, output_to_image, prepare_sample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.score_prior_artifact import MANIFEST, load_score_prior, read_score_manifest
from mrdserve.models.physics.posterior_sampling import MAX_POSTERIOR_SAMPLES, SamplerSettings, sample_posterior
from mrdserve.service.engine.result import ImageRole, ReconResult

Progress = Callable[[float], None]
log = logging.getLogger("mrdserve.posterior")

MIN_SAMPLES = 2  # one sample has no spread: its "uncertainty map" would be zeros
# memory of one chain per pixel of a slice: the network's activations (Simpson's rule runs 3 extra copies) plus the
# coil images of the data term; measured about 1.5 kB per pixel at 8 coils (64 chains at 128 x 128: 1.6 GB)
CHAIN_BYTES_PER_PIXEL = 1200
CHAIN_BYTES_PER_PIXEL_COIL = 48


def check_uncertainty(n_samples: Any, field: str = "uncertainty") -> int:
    """``n_samples`` as the number of posterior samples a request asks for (0: none, else 2 to the maximum);
    ValueError naming ``field``."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or not (
            n_samples == 0 or MIN_SAMPLES <= n_samples <= MAX_POSTERIOR_SAMPLES):
        raise ValueError(f"{field}: must be 0 (none) or an integer number of posterior samples in "
                         f"{MIN_SAMPLES}..{MAX_POSTERIOR_SAMPLES}, got {str(n_samples)[:50]!r}")
    return n_samples


def chains_in_memory(sample: KSpaceSample, memory_bytes: int) -> int:
    """How many chains of ``sample``'s slice fit in ``memory_bytes`` at once (at least 1): larger requests run
    their chains in chunks, so a request's memory is bounded by its budget, not by its sample count."""
    pixels = math.prod(sample.matrix)
    per_chain = pixels * (CHAIN_BYTES_PER_PIXEL + CHAIN_BYTES_PER_PIXEL_COIL * sample.n_coils)
    return max(1, memory_bytes // per_chain)


@dataclass(frozen=True)
class PriorArtifact:
    """A score-prior artifact directory and the name it is known by (``<name>-<version>``)."""

    path: Path
    label: str


def find_priors(directories: Sequence[Path]) -> list[PriorArtifact]:
    """The score-prior artifacts under ``directories`` (each ``<name>-<version>/manifest.json`` of kind
    ``score-prior`` with matching hashes), in order; anything else is skipped with a warning, and a directory that
    does not exist holds none."""
    found = []
    for directory in directories:
        if not Path(directory).is_dir():
            continue
        for candidate in sorted(Path(directory).iterdir()):
            if not (candidate / MANIFEST).is_file():
                continue
            try:
                read_score_manifest(candidate)
            except ValueError as error:
                log.warning("not a usable score prior, skipped: %s", error)
                continue
            found.append(PriorArtifact(candidate, candidate.name))
    return found


def check_sample(sample: KSpaceSample) -> None:
    """ValueError when uncertainty maps cannot be made for ``sample`` (they are made for 2D slices)."""
    if sample.n_spatial != 2:
        raise ValueError(f"uncertainty: maps are made for 2D slices; this data is {sample.n_spatial}D")


def noise_std(sample: KSpaceSample, prepared: PreparedSample) -> float | None:
    """The std of each real k-space component in prepared units: prewhitened data have unit complex noise
    variance (1/2 per component) before the preparation divides by ``scale``; otherwise None (the sampler
    estimates it)."""
    if not sample.prewhitened:
        return None
    return 1.0 / (math.sqrt(2.0) * float(prepared.scale.reshape(-1)[0]))


class PosteriorEstimator:
    """Draws posterior samples of a reconstructed slice with the first prior found (the one ``label`` names);
    loads it once, on first use, checking its hashes. Thread-safe; the engine runs one estimate at a time on a
    thread of its own. ``memory_bytes`` bounds the chains held at once."""

    def __init__(self, directories: Sequence[Path], device: torch.device | str = "cpu",
                 memory_bytes: int = 1 << 30) -> None:
        self.priors = find_priors(directories)
        self.device = torch.device(device)
        self.memory_bytes = memory_bytes
        self._loaded: tuple[Any, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return bool(self.priors)

    @property
    def label(self) -> str:
        return self.priors[0].label if self.priors else "none"

    def _prior(self) -> tuple[Any, dict[str, Any]]:
        if not self.priors:
            raise ValueError("uncertainty maps need a score-prior artifact, and none is configured (priors)")
        with self._lock:
            if self._loaded is None:
                self._loaded = load_score_prior(self.priors[0].path, self.device)
            return self._loaded

    def estimate(self, result: ReconResult, n_samples: int, time_budget_s: float,
                 progress: Progress | None = None, seed: int = 0,
                 cancel: threading.Event | None = None) -> list[ReconResult]:
        """The posterior mean and standard-deviation images of ``result``'s slice from ``n_samples`` samples
        drawn within ``time_budget_s``; ValueError for data the sampler cannot take (3D, a bad count);
        ``SamplingCancelledError`` as soon as ``cancel`` is set."""
        check_uncertainty(n_samples)
        if n_samples == 0:
            raise ValueError("uncertainty: no posterior samples were asked for")
        sample = result.sample
        check_sample(sample)
        preparation = "cartesian-sense" if sample.is_cartesian else "noncartesian-toeplitz"
        prepared = prepare_sample(sample, preparation)
        score, manifest = self._prior()
        settings = replace(SamplerSettings.from_dict(manifest["sampler_settings"]),
                           max_batch=min(n_samples, chains_in_memory(sample, self.memory_bytes)))
        drawn = sample_posterior(score, prepared.inputs, preparation, n_samples, noise_std=noise_std(sample, prepared),
                                 settings=settings, seed=seed, time_budget_s=time_budget_s, progress=progress,
                                 device=self.device, cancelled=None if cancel is None else cancel.is_set)
        scale = prepared.scale
        mean = output_to_image(drawn.mean.abs().unsqueeze(0).float().cpu(), scale, prepared.recon_matrix)[0]
        std = output_to_image(drawn.std.unsqueeze(0).float().cpu(), scale, prepared.recon_matrix)[0]
        drawn_count = int(drawn.samples.shape[0])
        if drawn.stopped_early:
            made = (f"{drawn.n_completed} of {n_samples} posterior samples completed, {drawn_count} drawn "
                    f"(cut short: {drawn.note})")
        else:
            made = f"{n_samples} posterior samples"
        note = f"{made} from score prior {self.label}; research use, not for diagnosis"
        return [result.posterior(ImageRole.posterior_mean, mean.numpy(), note),
                result.posterior(ImageRole.posterior_std, std.numpy(), note)]
