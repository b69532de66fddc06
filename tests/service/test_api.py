"""The REST API against a fake engine (fast): input checks, errors, auth, CORS, async jobs, metrics."""

import asyncio
import io
import shutil
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from fastapi.testclient import TestClient

from mrdserve.models.data.ismrmrd_io import read_ismrmrd
from mrdserve.service.admission import Budget
from mrdserve.service.api import create_app
from mrdserve.service.config import ServiceConfig
from mrdserve.service.engine.batcher import QueueFullError, ReconstructionError
from mrdserve.service.engine.choice import AUTOMATIC
from mrdserve.service.engine.result import ReconResult
from mrdserve.service.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[2]


class FakeEngine:
    """Stands in for service.engine.engine.Engine: instant images, scripted failures."""

    def __init__(self, fail_with: Exception | None = None, delay_s: float = 0.0) -> None:
        self.metrics = ServiceMetrics()
        self.ready = False
        self.fail_with = fail_with
        self.delay_s = delay_s
        self.calls = 0
        self.methods: list[str] = []

    async def start(self) -> None:
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False

    def models(self) -> list[dict]:
        return [{"name": "fake", "version": "1"}]

    async def reconstruct(self, samples, choice=AUTOMATIC, request_id=""):
        self.calls += 1
        self.methods.append(choice.method)
        artifact = choice.artifact
        await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        if artifact == "nope":
            raise ValueError("unknown artifact 'nope'; available: fake")
        return [ReconResult(image=np.ones(s.recon_matrix, np.float32), sample=s, label="fake-1", artifact="fake",
                            version="1") for s in samples]


# ------------------------------------------------------------------------------------------------ input files
def simulate(path: Path, trajectory: str = "cartesian", matrix: int = 32, coils: int = 4,
             acceleration: int = 2) -> Path:
    from mrdserve.service.cli import main
    assert main(["simulate", str(path), "--trajectory", trajectory, "--coils", str(coils), "--acceleration",
                 str(acceleration), "--matrix", str(matrix), "--seed", "3"]) == 0
    return path


def bad_inputs(good: Path, directory: Path) -> dict[str, tuple[Path, int, str, str]]:
    """name -> (file, expected status, expected error code, a word the message must contain)."""
    directory.mkdir(parents=True, exist_ok=True)
    cases = {}
    not_hdf5 = directory / "not_hdf5.h5"
    not_hdf5.write_bytes(b"this is a text file, not HDF5\n" * 10)
    cases["not_hdf5"] = (not_hdf5, 415, "not_hdf5", "HDF5")
    no_group = directory / "no_group.h5"
    with h5py.File(no_group, "w") as f:
        f["something"] = np.zeros(3)
    cases["no_group"] = (no_group, 422, "no_ismrmrd_dataset", "dataset")
    no_header = directory / "no_header.h5"
    with h5py.File(no_header, "w") as f:
        f.create_group("dataset")["other"] = np.zeros(3)
    cases["no_header"] = (no_header, 422, "no_ismrmrd_header", "header")
    no_data = directory / "no_data.h5"
    shutil.copy(good, no_data)
    with h5py.File(no_data, "a") as f:
        del f["dataset/data"]
    cases["no_data"] = (no_data, 422, "no_data", "no acquisitions")
    unsupported = directory / "unsupported_trajectory.h5"
    shutil.copy(good, unsupported)
    with h5py.File(unsupported, "a") as f:
        xml = f["dataset/xml"][0]
        xml = xml.decode() if isinstance(xml, bytes) else xml
        assert "<trajectory>cartesian</trajectory>" in xml
        f["dataset/xml"][0] = xml.replace("<trajectory>cartesian</trajectory>", "<trajectory>epi</trajectory>")
    cases["unsupported_trajectory"] = (unsupported, 422, "unsupported_trajectory", "epi")
    inconsistent = directory / "inconsistent.h5"
    shutil.copy(good, inconsistent)
    with h5py.File(inconsistent, "a") as f:
        records = f["dataset/data"][:]
        last = records.size - 1
        head = records[last]["head"].copy()
        head["active_channels"] = head["active_channels"] // 2
        records[last]["head"] = head
        f["dataset/data"][last] = records[last]
    cases["inconsistent_dimensions"] = (inconsistent, 422, "inconsistent_data", "channels")
    poisoned = directory / "nan.h5"
    shutil.copy(good, poisoned)
    with h5py.File(poisoned, "a") as f:
        middle = f["dataset/data"].shape[0] - 2  # an imaging line (noise scans come first)
        record = f["dataset/data"][middle]
        record["data"][:] = np.nan
        f["dataset/data"][middle] = record
    cases["non_finite"] = (poisoned, 422, "non_finite_data", "NaN")
    return cases


@pytest.fixture(scope="module")
def cartesian(tmp_path_factory) -> Path:
    return simulate(tmp_path_factory.mktemp("inputs") / "cartesian.h5")


def _client(tmp_path: Path, engine: FakeEngine | None = None, **overrides) -> TestClient:
    config = ServiceConfig(spool_dir=tmp_path / "spool", device="cpu", **overrides)
    return TestClient(create_app(config, engine or FakeEngine()))


def _post(client: TestClient, path: Path, **params):
    with open(path, "rb") as f:
        return client.post("/v1/reconstructions", params=params, files={"file": ("scan.h5", f)})


# ------------------------------------------------------------------------------------------------ tests
def test_reconstruction_returns_the_format_asked_for(tmp_path, cartesian):
    with _client(tmp_path) as client:
        response = _post(client, cartesian, format="png")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["x-mrdserve-slices"] == "1" and response.headers["x-mrdserve-labels"] == "fake-1"
        assert len(response.headers["x-request-id"]) == 16
        names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
        assert len(names) == 1 and names[0].endswith(".png")
        raw = client.post("/v1/reconstructions?format=nifti", content=cartesian.read_bytes())  # raw body works too
        assert raw.status_code == 200 and raw.content[:2] == b"\x1f\x8b"  # gzip'ed NIfTI
        assert not list((tmp_path / "spool" / "work").iterdir())  # temporary files are gone


def test_every_bad_input_gets_its_4xx_and_message(tmp_path, cartesian):
    engine = FakeEngine()
    with _client(tmp_path, engine, upload_max_bytes=cartesian.stat().st_size + 1000) as client:
        for name, (path, status, code, word) in bad_inputs(cartesian, tmp_path / "bad").items():
            response = _post(client, path)
            assert response.status_code == status, (name, response.text)
            body = response.json()
            assert body["error"] == code and word.lower() in body["message"].lower(), (name, body)
            assert str(tmp_path) not in body["message"]  # no server paths leak into messages
        too_large = tmp_path / "large.h5"
        too_large.write_bytes(b"\0" * (cartesian.stat().st_size + 200_000))
        response = _post(client, too_large)
        assert response.status_code == 413 and "upload_max_bytes" in response.json()["message"]
        assert client.post("/v1/reconstructions", files={"other": ("a", b"x")}).json()["error"] == "missing_file"
        response = _post(client, cartesian, format="bmp")
        assert response.status_code == 422 and "format" in response.json()["message"]
        response = _post(client, cartesian, artifact="nope")
        assert response.status_code == 422 and "unknown artifact" in response.json()["message"]
        response = _post(client, cartesian, method="sense-ish")
        assert response.status_code == 422 and "method" in response.json()["message"]
        assert engine.calls == 1  # only the unknown-artifact request reached the engine
        assert _post(client, cartesian, method="grappa").status_code == 200
        assert engine.methods[-1] == "grappa"
        assert client.get("/healthz").json()["status"] == "ok"
        assert _post(client, cartesian).status_code == 200


def test_engine_errors_map_to_503_with_retry_after_and_5xx(tmp_path, cartesian):
    with _client(tmp_path, FakeEngine(fail_with=QueueFullError("queue of fake is full", 2.4))) as client:
        response = _post(client, cartesian)
        assert response.status_code == 503 and response.headers["retry-after"] == "3"
        assert response.json()["error"] == "queue_full"
    with _client(tmp_path, FakeEngine(fail_with=ReconstructionError("network produced NaN"))) as client:
        response = _post(client, cartesian)
        assert response.status_code == 500 and "network produced NaN" in response.json()["message"]
        metrics = client.get("/metrics").text
        assert 'mrdserve_requests_total{artifact="none",entrypoint="rest",outcome="failed"} 1.0' in metrics


def test_api_keys_guard_the_v1_endpoints_only(tmp_path, cartesian):
    with _client(tmp_path, api_keys=["s3cret"]) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/v1/models", headers={"X-API-Key": "s3cret"}).json()["models"][0]["name"] == "fake"
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert _post(client, cartesian).json()["error"] == "unauthorized"
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_cors_is_off_unless_origins_are_configured(tmp_path):
    preflight = {"Origin": "https://viewer.example", "Access-Control-Request-Method": "POST"}
    with _client(tmp_path) as client:
        response = client.get("/healthz", headers={"Origin": "https://viewer.example"})
        assert "access-control-allow-origin" not in response.headers
    with _client(tmp_path, cors_origins=["https://viewer.example"]) as client:
        response = client.options("/v1/reconstructions", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://viewer.example"


def test_async_job_is_spooled_run_and_delivered_until_it_expires(tmp_path, cartesian):
    with _client(tmp_path, FakeEngine(delay_s=0.05)) as client:
        with open(cartesian, "rb") as f:
            accepted = client.post("/v1/reconstructions?mode=async&format=png", files={"file": f})
        assert accepted.status_code == 202
        job_id = accepted.json()["id"]
        assert client.get(f"/v1/reconstructions/{job_id}/result").status_code in (200, 409)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = client.get(f"/v1/reconstructions/{job_id}").json()
            if status["state"] in ("succeeded", "failed"):
                break
            time.sleep(0.05)
        assert status["state"] == "succeeded" and status["slices"] == 1
        result = client.get(f"/v1/reconstructions/{job_id}/result")
        assert result.status_code == 200 and zipfile.ZipFile(io.BytesIO(result.content)).namelist()
        assert client.get(f"/v1/reconstructions/{job_id}").json()["fetched"]
        again = client.get(f"/v1/reconstructions/{job_id}/result")  # a broken download can be retried
        assert again.status_code == 200 and again.content == result.content
        part = client.get(f"/v1/reconstructions/{job_id}/result", headers={"Range": "bytes=10-99"})
        assert part.status_code == 206 and part.content == result.content[10:100]
        app_spool = client.app.state.spool
        assert app_spool.expire(now=time.time() + 10 * 3600) == 1  # gone once its time-to-live has passed
        assert client.get(f"/v1/reconstructions/{job_id}/result").status_code == 404
        assert client.get("/v1/reconstructions/0123456789abcdef0123456789abcdef").status_code == 404
        rejected = client.post("/v1/reconstructions?mode=async", content=b"not hdf5")
        assert rejected.status_code == 415


def test_async_job_with_bad_data_fails_with_reason(tmp_path, cartesian):
    no_data = bad_inputs(cartesian, tmp_path / "bad")["no_data"][0]
    with _client(tmp_path) as client:
        job_id = client.post("/v1/reconstructions?mode=async", content=no_data.read_bytes()).json()["id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and client.get(f"/v1/reconstructions/{job_id}").json()["state"] in (
                "queued", "running"):
            time.sleep(0.05)
        status = client.get(f"/v1/reconstructions/{job_id}").json()
        assert status["state"] == "failed" and status["error_status"] == 422 and "acquisitions" in status["error"]
        assert client.get(f"/v1/reconstructions/{job_id}/result").json()["error"] == "job_failed"


def test_spool_bound_refuses_async_jobs_with_507(tmp_path, cartesian):
    with _client(tmp_path, spool_max_bytes=cartesian.stat().st_size // 2) as client:
        response = client.post("/v1/reconstructions?mode=async", content=cartesian.read_bytes())
        assert response.status_code == 507 and "spool" in response.json()["message"]


def test_not_ready_until_the_engine_started(tmp_path, cartesian):
    class SlowStart(FakeEngine):
        async def start(self) -> None:
            await asyncio.sleep(30)

    with _client(tmp_path, SlowStart()) as client:
        assert client.get("/readyz").status_code == 503
        response = _post(client, cartesian)
        assert response.status_code == 503 and response.json()["error"] == "not_ready"
        assert client.get("/healthz").json() == {"status": "ok", "ready": False}


def test_samples_read_by_the_api_match_the_file(tmp_path, cartesian):
    _, samples = read_ismrmrd(cartesian)
    from mrdserve.service.rest.processing import ingest
    _, samples2 = ingest(cartesian, "dataset", Budget())
    assert len(samples2) == len(samples) and samples2[0].kspace.shape == samples[0].kspace.shape


def test_async_job_waits_for_room_when_the_queue_is_full(tmp_path, cartesian):
    class FullOnce(FakeEngine):
        async def reconstruct(self, samples, choice=AUTOMATIC, request_id=""):
            if self.calls == 0:
                self.calls += 1
                raise QueueFullError("queue of fake is full", 0.2)
            return await super().reconstruct(samples, choice, request_id)

    engine = FullOnce()
    with _client(tmp_path, engine) as client:
        job_id = client.post("/v1/reconstructions?mode=async", content=cartesian.read_bytes()).json()["id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and client.get(f"/v1/reconstructions/{job_id}").json()["state"] in (
                "queued", "running"):
            time.sleep(0.05)
        status = client.get(f"/v1/reconstructions/{job_id}").json()
        assert status["state"] == "succeeded" and status["attempts"] == 1 and engine.calls == 2
