"""The validation envelope: bins, the refusal reasons, automatic choice only inside served cells (an explicit
name still works), and ``mrdserve validate`` on a tiny exported artifact (manifest valid, hashes intact,
constraints narrowed to the validated ranges)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mrdserve.models.data.envelope import acceleration_of, bin_edges, bin_index, envelope_refusal, relative_noise
from mrdserve.models.data.manifest import Manifest
from mrdserve.models.data.manifest_schema import validate_manifest, verify_artifact
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.simulate import simulate_cartesian
from mrdserve.models.export.envelope import GRIDS, SERVE_MARGIN_DB, write_envelope
from mrdserve.service.artifacts import Artifact, choose, mismatch
from mrdserve.service.engine.plan import plan_sample
from tests.export.test_export import write_checkpoint


def test_bins_are_midpoints_with_a_half_step_beyond_the_extremes() -> None:
    edges = bin_edges([96, 160, 256], geometric=True)
    assert edges[1] == pytest.approx((96 * 160) ** 0.5) and edges[2] == pytest.approx((160 * 256) ** 0.5)
    assert edges[0] < 96 and edges[-1] > 256
    assert [bin_index(edges, v) for v in (80, 96, 130, 210, 256, 300)] == [0, 0, 1, 2, 2, 2]
    assert bin_index(edges, 50) is None and bin_index(edges, 1000) is None
    linear = bin_edges([1.0, 2.0, 4.0, 8.0], geometric=False)
    assert linear == [0.5, 1.5, 3.0, 6.0, 10.0]


def _sample(matrix: int, coils: int, acceleration: float, noise: float, seed: int = 0) -> KSpaceSample:
    sim = simulate_cartesian(matrix, n_coils=coils, acceleration=acceleration, noise_level=noise,
                             readout_oversampling=1, with_noise_scan=False, seed=seed)
    return KSpaceSample(kspace=sim.kspace[0], matrix=sim.matrix, recon_matrix=sim.matrix, mask=sim.mask[:, None],
                        acs_mask=sim.acs[:, None])


def test_measured_noise_and_acceleration_follow_the_data() -> None:
    """Raw data: the estimate from the outer readout grows with the noise (signal there biases it up: 0.011 at
    no noise, 0.049 at 4% for 128^2); prewhitened data have unit variance by construction."""
    low, high = _sample(128, 8, 4, 0.005), _sample(128, 8, 4, 0.04)
    assert relative_noise(high) > 2.5 * relative_noise(low)
    # the same noise level reads the same at other accelerations and matrix sizes (within 30%)
    for other in (_sample(128, 8, 2, 0.04), _sample(192, 8, 4, 0.04)):
        assert relative_noise(other) == pytest.approx(relative_noise(high), rel=0.3)
    assert acceleration_of(low) == pytest.approx(4.0, rel=0.15)
    assert acceleration_of(_sample(64, 4, 1, 0.01)) == 1.0


def _envelope(serve_r4: bool) -> dict:
    cells = []
    for acceleration in (1.0, 4.0):
        serve = serve_r4 and acceleration == 4.0
        cells.append({"matrix": 64, "coils": 4, "acceleration": acceleration, "noise": 0, "slices": 1,
                      "psnr": 30.0 if serve else 20.0, "ssim": 0.9 if serve else 0.5,
                      "classical": {"method": "l1-wavelet", "psnr": 25.0, "ssim": 0.7}, "serve": serve})
    return {"reference": "test", "rule": "test", "cells": cells, "axes": {
        "matrix": {"points": [64], "edges": bin_edges([64], geometric=True)},
        "coils": {"points": [4], "edges": bin_edges([4], geometric=True)},
        "acceleration": {"points": [1.0, 4.0], "edges": bin_edges([1.0, 4.0], geometric=False)},
        "noise": {"points": [0.3], "edges": [0.0, 1.0]}}}


def _artifact(envelope: dict | None, name: str = "toy") -> Artifact:
    manifest = {"name": name, "version": "1", "task": "cartesian2d-multicoil", "network": {"name": "toy"},
                "preparation": {"name": "cartesian-sense", "params": {}},
                "constraints": {"trajectory": ["cartesian"], "coils": {"min": 2, "max": 64},
                                "matrix": {"min": 16, "max": 512}, "acceleration": {"min": 1.0, "max": 8.0}},
                "validation": {"model": {}, "baselines": {}}}
    if envelope is not None:
        manifest["validation"]["envelope"] = envelope
    return Artifact(Path(f"/nonexistent/{name}"), Manifest.from_document(manifest))


def test_refusal_reasons_name_the_cell_or_the_axis() -> None:
    manifest = _artifact(_envelope(serve_r4=True)).manifest.document
    assert envelope_refusal(manifest, _sample(64, 4, 4, 0.01)) is None
    assert "validated below l1-wavelet" in envelope_refusal(manifest, _sample(64, 4, 1, 0.01))
    assert "matrix 128 outside the validated range" in envelope_refusal(manifest, _sample(128, 4, 4, 0.01))
    assert "coils 8 outside" in envelope_refusal(manifest, _sample(64, 8, 4, 0.01))
    assert "has no validation envelope" in envelope_refusal(_artifact(None).manifest.document, _sample(64, 4, 4, 0.01))


def test_automatic_choice_only_inside_served_cells_and_names_still_work() -> None:
    losing, winning, bare = (_artifact(_envelope(False), "losing"), _artifact(_envelope(True), "winning"),
                             _artifact(None, "bare"))
    sample = _sample(64, 4, 4, 0.01)
    assert choose([losing, bare, winning], sample) is winning
    assert choose([losing, bare], sample) is None
    assert choose([losing], sample, "losing") is losing  # named: constraints only
    assert mismatch(losing, sample) is None and mismatch(losing, sample, envelope=True) is not None
    plan = plan_sample([losing, bare], sample)
    assert plan.artifact is None
    assert "losing-1: validated below l1-wavelet" in plan.fallback_reason
    assert "bare-1: has no validation envelope" in plan.fallback_reason


def test_validate_writes_the_envelope_into_the_manifest(tmp_path: Path) -> None:
    from mrdserve.models.export.export import export_checkpoint

    target = export_checkpoint(write_checkpoint(tmp_path / "xpdnet.pt", "xpdnet"), tmp_path / "artifacts")
    before = json.loads((target / "manifest.json").read_text())
    manifest = write_envelope(target, GRIDS["quick"])
    validate_manifest(manifest)
    assert verify_artifact(target) == manifest  # hashes unchanged, the stored manifest is the returned one
    envelope = manifest["validation"]["envelope"]
    assert [(c["matrix"], c["coils"], c["acceleration"]) for c in envelope["cells"]] == [(64, 4, 1.0), (64, 4, 4.0)]
    for cell in envelope["cells"]:
        assert cell["classical"]["method"] in ("rss", "cg-sense", "grappa", "l1-wavelet")
        assert cell["serve"] == (cell["psnr"] >= cell["classical"]["psnr"] + SERVE_MARGIN_DB
                                 and cell["ssim"] >= cell["classical"]["ssim"])
    narrowed = manifest["constraints"]
    assert narrowed["matrix"]["min"] >= 51 and narrowed["matrix"]["max"] <= 80
    assert narrowed["coils"] == {"min": 4, "max": 5}
    assert narrowed["acceleration"] == {"min": 1.0, "max": 5.5} != before["constraints"]["acceleration"]
    broken = copy.deepcopy(manifest)
    broken["validation"]["envelope"]["cells"][0].pop("serve")
    with pytest.raises(ValueError, match="serve"):
        validate_manifest(broken)


def test_every_cell_of_the_standard_grids_can_be_simulated() -> None:
    """Mask draws only (no reconstruction): each Cartesian cell's R is reachable with its calibration lines."""
    from mrdserve.models.data.simulate import _mask
    from mrdserve.models.export.envelope import calibration_fraction

    grid = GRIDS["standard"]
    for matrix in grid.matrix:
        for acceleration in grid.acceleration:
            lines, acs = _mask("equispaced_fraction", matrix, acceleration, calibration_fraction(matrix, acceleration),
                               0)
            assert int(acs.sum()) >= min(16, matrix // 2 // acceleration)
            assert lines.numel() / float(lines.sum()) == pytest.approx(acceleration, rel=0.15)
    assert GRIDS["standard-noncartesian"].acceleration == (2.0, 4.0, 8.0)
