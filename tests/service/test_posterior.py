"""The runtime's posterior step with the bundled score prior: found and hash-checked, bounded by the time budget,
refusing what it cannot take, and the same from ``mrdserve recon --uncertainty``."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from mrdserve.models.data.ismrmrd_io import read_ismrmrd
from mrdserve.models.data.simulate import simulate_to_file
from mrdserve.service.config import BUNDLED_PRIORS, ServiceConfig
from mrdserve.service.engine.engine import Engine
from mrdserve.service.engine.result import ImageRole, ReconResult
from mrdserve.service.posterior import PosteriorEstimator, check_uncertainty, find_priors


@pytest.fixture(scope="module")
def cartesian(tmp_path_factory):
    path = tmp_path_factory.mktemp("posterior") / "cartesian.h5"
    simulate_to_file(path, "cartesian", coils=4, acceleration=4, matrix=48, slices=1, seed=11)
    return path


def _zero_filled_result(sample) -> ReconResult:
    return ReconResult(np.ones(sample.recon_matrix, np.float32), sample, "test-1", artifact="test", version="1")


def test_the_bundled_prior_is_found_and_a_tight_budget_cuts_sampling_short_saying_so(cartesian):
    assert [prior.label for prior in find_priors([BUNDLED_PRIORS])] == ["demo-score-0.1"]
    estimator = PosteriorEstimator([BUNDLED_PRIORS])
    _, [sample] = read_ismrmrd(cartesian)
    mean, std = estimator.estimate(_zero_filled_result(sample), 2, time_budget_s=1e-3)
    assert (mean.role, std.role) == (ImageRole.posterior_mean, ImageRole.posterior_std)
    assert mean.image.shape == std.image.shape == tuple(sample.recon_matrix)
    assert np.isfinite(mean.image).all() and (std.image >= 0).all()
    assert "cut short: time budget" in mean.note and "demo-score-0.1" in mean.note
    assert "not for diagnosis" in std.note


def test_what_the_sampler_cannot_take_is_refused_naming_it(cartesian, tmp_path):
    volume = SimpleNamespace(n_spatial=3, recon_matrix=(8, 8, 8))  # the check comes before any preparation
    with pytest.raises(ValueError, match="2D slices; this data is 3D"):
        PosteriorEstimator([BUNDLED_PRIORS]).estimate(_zero_filled_result(volume), 2, 1.0)
    for bad in (-1, 1, 65, 2.5, True, "4"):  # one sample has no spread
        with pytest.raises(ValueError, match="uncertainty: must be 0"):
            check_uncertainty(bad)
    engine = Engine(ServiceConfig(device="cpu", warmup=False), preload=False)
    with pytest.raises(ValueError, match="2D slices"):  # refused before any work, from the samples
        engine.check_uncertainty(2, samples=[volume])
    without = Engine(ServiceConfig(device="cpu", warmup=False, priors=[tmp_path / "none"]), preload=False)
    assert without.check_uncertainty(0) == 0  # asking for nothing needs no prior
    with pytest.raises(ValueError, match="score-prior artifact and none is configured"):
        without.check_uncertainty(2)


def test_recon_writes_the_posterior_series_beside_the_images(cartesian, tmp_path, capsys):
    from mrdserve.service.cli import main

    out = tmp_path / "out"
    assert main(["recon", str(cartesian), "-o", str(out), "--format", "dicom", "--artifact", "classical",
                 "--uncertainty", "2", "--uncertainty-budget-s", "3"]) == 0
    printed = capsys.readouterr().out  # 3 s cut the schedule short at 48 x 48: the line says how far it got
    assert "uncertainty maps: 0 of 2 posterior samples completed, 2 drawn (cut short: time budget" in printed
    assert "from score prior demo-score-0.1" in printed
    descriptions = {folder: pydicom.dcmread(next((out / folder).glob("*.dcm"))).SeriesDescription
                    for folder in ("posterior-mean", "posterior-std")}
    assert "posterior mean" in descriptions["posterior-mean"]
    assert "uncertainty map" in descriptions["posterior-std"]
    assert main(["recon", str(cartesian), "-o", str(out), "--uncertainty", "99"]) == 2
    assert "--uncertainty: must be 0 (none) or an integer" in capsys.readouterr().err


def test_cancelling_the_request_stops_a_running_sampling_at_once(cartesian):
    # a 60 s budget the sampling would use up; the awaiting task is cancelled once sampling has started: the
    # sampler stops with SamplingCancelledError (a run the budget stopped would return maps saying "cut short")
    import asyncio

    engine = Engine(ServiceConfig(device="cpu", warmup=False, uncertainty_budget_s=60.0), preload=False)
    _, [sample] = read_ismrmrd(cartesian)
    result = _zero_filled_result(sample)
    started = asyncio.Event()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(engine.add_uncertainty(
            [result], 8, progress=lambda _: loop.call_soon_threadsafe(started.set)))
        await asyncio.wait_for(started.wait(), timeout=60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await loop.run_in_executor(engine._posterior_pool, lambda: None)  # queued behind the sampling thread

    asyncio.run(scenario())
    assert result.derived == []
    assert result.posterior_error == "uncertainty maps not made: the request was cancelled"


def test_slices_past_the_request_budget_keep_their_images_without_maps(cartesian):
    # the first slice may take 60 s but gets what is left of the request's 0.5 s, and it samples past that
    # deadline (it stops after the move that crosses it), so the next slices find nothing left
    engine = Engine(ServiceConfig(device="cpu", warmup=False, uncertainty_budget_s=60.0,
                                  uncertainty_request_budget_s=0.5), preload=False)
    _, [sample] = read_ismrmrd(cartesian)
    results = [_zero_filled_result(sample) for _ in range(3)]
    engine.add_uncertainty_sync(results, 2)
    assert [bool(r.derived) for r in results] == [True, False, False]
    budget = re.search(r"cut short: time budget of ([0-9.e-]+) s", results[0].derived[0].note)
    assert budget is not None and 0.0 < float(budget.group(1)) <= 0.5  # what was left of the request's 0.5 s
    for result in results[1:]:
        assert "the request's sampling budget (0.5 s) was spent on earlier slices" in result.posterior_error
    with pytest.raises(ValueError, match="uncertainty_request_budget_s must be positive"):
        ServiceConfig(uncertainty_request_budget_s=0)
