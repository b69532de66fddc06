"""Uncertainty maps over REST (against a fake engine, fast): asked for per request, asynchronous only, the job's
progress in its status, the posterior series in the result; bad counts and a missing prior refused first."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pydicom
import pytest

from mrdserve.service.engine.result import ImageRole
from mrdserve.service.posterior import check_uncertainty
from tests.service.test_api import FakeEngine, _client, _post, simulate


class FakeUncertaintyEngine(FakeEngine):
    """A fake engine whose posterior maps are instant: the mean is the image, the std a constant."""

    def __init__(self, has_prior: bool = True) -> None:
        super().__init__()
        self.has_prior = has_prior
        self.asked: list[int] = []
        self.artifacts: list = []

    def check_uncertainty(self, n_samples, field="uncertainty", samples=()):
        n_samples = check_uncertainty(n_samples, field)
        if n_samples and not self.has_prior:
            raise ValueError(f"{field}: uncertainty maps need a score-prior artifact and none is configured")
        return n_samples

    async def add_uncertainty(self, results, n_samples, progress=None):
        self.asked.append(n_samples)
        for index, result in enumerate(results):
            note = f"{n_samples} of {n_samples} posterior samples from score prior fake-1"
            result.derived = [result.posterior(ImageRole.posterior_mean, result.image, note),
                              result.posterior(ImageRole.posterior_std, np.full_like(result.image, 0.5), note)]
            if progress is not None:
                progress((index + 1) / len(results))


@pytest.fixture(scope="module")
def cartesian(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("inputs") / "cartesian.h5")


def _finished(client, job_id: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = client.get(f"/v1/reconstructions/{job_id}").json()
        if status["state"] in ("succeeded", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {status}")


def test_an_async_job_returns_the_posterior_series_and_reports_progress(tmp_path, cartesian):
    engine = FakeUncertaintyEngine()
    with _client(tmp_path, engine) as client:
        accepted = _post(client, cartesian, mode="async", uncertainty=3)
        assert accepted.status_code == 202, accepted.text
        status = _finished(client, accepted.json()["id"])
        assert status["state"] == "succeeded", status
        assert status["params"]["uncertainty"] == 3 and engine.asked == [3]
        assert status["progress"] == {"stage": "uncertainty", "fraction": 1.0}
        result = client.get(f"/v1/reconstructions/{status['id']}/result")
        archive = zipfile.ZipFile(io.BytesIO(result.content))
        series = {}
        for name in archive.namelist():
            ds = pydicom.dcmread(io.BytesIO(archive.read(name)))
            series[ds.SeriesInstanceUID] = (int(ds.SeriesNumber), ds.SeriesDescription, name.split("/")[0])
        assert len(series) == 3
        numbers = sorted(number for number, _, _ in series.values())
        assert numbers == [numbers[0], numbers[0] + 1, numbers[0] + 2]
        assert {folder for _, _, folder in series.values()} >= {"posterior-mean", "posterior-std"}


@pytest.mark.parametrize(("params", "words"), [
    ({"uncertainty": 2}, "mode=async"),  # slow: never on the synchronous path
    ({"uncertainty": 2, "mode": "async", "max": 1}, "unknown"),
    ({"uncertainty": 1000, "mode": "async"}, "2..64"),
    ({"uncertainty": 1, "mode": "async"}, "2..64"),  # one sample has no spread
    ({"uncertainty": -1}, "uncertainty"),
])
def test_bad_uncertainty_requests_are_refused_before_any_work(tmp_path, cartesian, params, words):
    engine = FakeUncertaintyEngine()
    with _client(tmp_path, engine) as client:
        response = _post(client, cartesian, **params)
        assert response.status_code in (400, 422), response.text
        assert words in response.text
        assert engine.calls == 0


def test_without_a_score_prior_the_request_is_refused_naming_it(tmp_path, cartesian):
    engine = FakeUncertaintyEngine(has_prior=False)
    with _client(tmp_path, engine) as client:
        response = _post(client, cartesian, mode="async", uncertainty=2)
        assert response.status_code == 422 and "score-prior" in response.text
        plain = _post(client, cartesian)  # without uncertainty nothing changes
        assert plain.status_code == 200 and engine.asked == []
        choices = client.get("/v1/choices").json()["uncertainty"]
        assert choices["max"] == 64 and choices["priors"] == [] and choices["budget_s_per_slice"] == 120.0
