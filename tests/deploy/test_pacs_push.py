"""DICOM results pushed to a real Orthanc on loopback (STOW-RS and C-STORE), directly and through the REST API."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient

from mrdserve.models.data.ismrmrd_io import read_ismrmrd
from mrdserve.service.api import create_app
from mrdserve.service.config import ServiceConfig
from mrdserve.service.engine.choice import Choice
from mrdserve.service.engine.engine import Engine
from mrdserve.service.metrics import ServiceMetrics
from mrdserve.service.outputs.package import package_results
from mrdserve.service.pacs import PacsTarget, dicom_files_in_zip, push
from tests.deploy.orthanc import DICOMWEB_PLUGIN, ORTHANC, ORTHANC_AET, free_port, run_orthanc

pytestmark = pytest.mark.skipif(ORTHANC is None or not DICOMWEB_PLUGIN.is_file(),
                                reason="Orthanc with its DICOMweb plugin (Debian orthanc, orthanc-dicomweb) "
                                       "is not installed")
SLICES = 3


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    with run_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory) -> Path:
    from mrdserve.service.cli import main
    path = tmp_path_factory.mktemp("input") / "cartesian.h5"
    assert main(["simulate", str(path), "--trajectory", "cartesian", "--coils", "4", "--acceleration", "2",
                 "--matrix", "32", "--slices", str(SLICES), "--seed", "5"]) == 0
    return path


@pytest.fixture(scope="module")
def reconstruction(acquisition):
    """Classical reconstructions of every slice (the engine's real path, no network needed)."""
    header, samples = read_ismrmrd(acquisition)
    results = Engine(ServiceConfig(device="cpu", warmup=False)).reconstruct_sync(samples, Choice.of("classical"))
    assert len(results) == SLICES
    return header, results


def dicom_series(reconstruction, directory: Path) -> list[bytes]:
    """A fresh DICOM series (new UIDs on every call) packaged as the API does."""
    header, results = reconstruction
    packaged = package_results(results, header, "dicom", directory)
    return dicom_files_in_zip(packaged.path)


def series_uid(files: list[bytes]) -> str:
    uids = {pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SeriesInstanceUID for f in files}
    assert len(uids) == 1
    return str(uids.pop())


def assert_in_orthanc(orthanc, files: list[bytes]) -> None:
    uid = series_uid(files)
    found = orthanc.series_instances(uid)
    assert len(found) == len(files)
    sent = {str(pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert {i["MainDicomTags"]["SOPInstanceUID"] for i in found} == sent
    series = httpx.get(f"{orthanc.rest}/series/{found[0]['ParentSeries']}", timeout=10).json()
    assert series["MainDicomTags"]["SeriesInstanceUID"] == uid
    assert len(series["Instances"]) == len(files)
    study = httpx.get(f"{orthanc.rest}/studies/{series['ParentStudy']}", timeout=10).json()
    assert series["ID"] in study["Series"]
    assert found[0]["ID"] in httpx.get(f"{orthanc.rest}/instances", timeout=10).json()


def test_stow_rs_push_arrives_in_orthanc(orthanc, reconstruction, tmp_path):
    files = dicom_series(reconstruction, tmp_path)
    report = push(files, PacsTarget(orthanc.dicomweb, "dicomweb"))
    assert (report.outcome, report.stored, report.instances, report.error) == ("ok", SLICES, SLICES, None)
    assert report.series_uids == [series_uid(files)]
    assert_in_orthanc(orthanc, files)


def test_c_store_push_arrives_in_orthanc(orthanc, reconstruction, tmp_path):
    files = dicom_series(reconstruction, tmp_path)
    report = push(files, PacsTarget(orthanc.dicom, "cstore", calling_aet="MRDSERVE", called_aet=ORTHANC_AET))
    assert (report.outcome, report.stored, report.error) == ("ok", SLICES, None)
    assert_in_orthanc(orthanc, files)
    pixels = httpx.get(f"{orthanc.rest}/instances/{orthanc.series_instances(series_uid(files))[0]['ID']}/file",
                       timeout=10).content
    assert pydicom.dcmread(io.BytesIO(pixels)).pixel_array.shape == (32, 32)


def test_failed_pushes_are_reported_not_raised(orthanc, reconstruction, tmp_path):
    files = dicom_series(reconstruction, tmp_path)
    closed = free_port()
    refused = push(files, PacsTarget(f"http://127.0.0.1:{closed}/dicom-web", "dicomweb", timeout_s=5))
    assert refused.outcome == "failed" and refused.stored == 0 and "ConnectError" in refused.error
    wrong_aet = push(files, PacsTarget(orthanc.dicom, "cstore", called_aet="NOT-ORTHANC", timeout_s=5))
    assert wrong_aet.outcome == "failed" and "rejected" in wrong_aet.error
    not_dicomweb = push(files, PacsTarget(f"{orthanc.rest}/no-such-root", "dicomweb", timeout_s=5))
    assert not_dicomweb.outcome == "failed" and "HTTP 404" in not_dicomweb.header()
    assert orthanc.series_instances(series_uid(files)) == []


@pytest.mark.parametrize(("url", "protocol", "word"), [
    ("ftp://pacs/dicom-web", "dicomweb", "pacs_url"), ("pacs-without-port", "cstore", "host:port"),
    ("http://pacs/dicom-web", "hl7", "pacs_protocol")])
def test_bad_pacs_settings_are_refused_at_start(url, protocol, word):
    with pytest.raises(ValueError, match=word):
        ServiceConfig.from_env_and_args(env={"MRDSERVE_PACS_URL": url, "MRDSERVE_PACS_PROTOCOL": protocol})
    with pytest.raises(ValueError, match="pacs_aet"):
        ServiceConfig(pacs_url="127.0.0.1:104", pacs_protocol="cstore", pacs_aet="A\\B")


class RecordedEngine:
    """The REST API's engine, answering with reconstructions made beforehand (keeps the API test fast)."""

    def __init__(self, results) -> None:
        self.metrics, self.ready, self.results = ServiceMetrics(), False, results

    async def start(self) -> None:
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False

    def models(self) -> list[dict]:
        return []

    async def reconstruct(self, samples, choice=None, request_id=""):
        assert self.metrics.sample_value("mrdserve_inflight_requests") == 1
        return self.results


def serve(config: ServiceConfig, engine: RecordedEngine) -> TestClient:
    client = TestClient(create_app(config, engine=engine))
    client.__enter__()
    for _ in range(200):
        if client.get("/readyz").status_code == 200:
            return client
        time.sleep(0.02)
    raise AssertionError("the app did not become ready")


def test_rest_api_pushes_sync_and_async_results(orthanc, acquisition, reconstruction, tmp_path):
    engine = RecordedEngine(reconstruction[1])
    config = ServiceConfig.from_env_and_args(env={
        "MRDSERVE_SPOOL_DIR": str(tmp_path / "spool"), "MRDSERVE_PACS_URL": orthanc.dicomweb})
    client = serve(config, engine)
    try:
        answer = client.post("/v1/reconstructions", files={"file": acquisition.read_bytes()})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-mrdserve-pacs"] == f"ok; dicomweb; {SLICES}/{SLICES} instances"
        with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
            files = [archive.read(n) for n in sorted(archive.namelist())]
        assert_in_orthanc(orthanc, files)
        assert engine.metrics.sample_value("mrdserve_pacs_push_total", {"protocol": "dicomweb", "outcome": "ok"}) == 1
        assert engine.metrics.sample_value("mrdserve_inflight_requests") == 0
    finally:
        client.__exit__(None, None, None)

    engine = RecordedEngine(reconstruction[1])
    config = config.with_overrides(pacs_url=orthanc.dicom, pacs_protocol="cstore", pacs_called_aet=ORTHANC_AET)
    client = serve(config, engine)
    try:
        accepted = client.post("/v1/reconstructions?mode=async", files={"file": acquisition.read_bytes()})
        assert accepted.status_code == 202
        for _ in range(500):
            status = client.get(accepted.json()["status_url"]).json()
            if status["state"] in ("succeeded", "failed"):
                break
            time.sleep(0.02)
        assert status["state"] == "succeeded", status
        assert status["pacs"] == {"outcome": "ok", "protocol": "cstore", "instances": SLICES, "stored": SLICES,
                                  "error": None}
        result = client.get(accepted.json()["result_url"])
        with zipfile.ZipFile(io.BytesIO(result.content)) as archive:
            assert_in_orthanc(orthanc, [archive.read(n) for n in sorted(archive.namelist())])
    finally:
        client.__exit__(None, None, None)


def test_rest_api_reports_a_failed_push_and_still_returns_the_images(acquisition, reconstruction, tmp_path, caplog):
    engine = RecordedEngine(reconstruction[1])
    config = ServiceConfig(spool_dir=tmp_path / "spool", pacs_url=f"http://127.0.0.1:{free_port()}/dicom-web",
                           pacs_timeout_s=5)
    client = serve(config, engine)
    try:
        answer = client.post("/v1/reconstructions", files={"file": acquisition.read_bytes()})
        assert answer.status_code == 200
        assert answer.headers["x-mrdserve-pacs"].startswith(f"failed; dicomweb; 0/{SLICES} instances; STOW-RS")
        assert len(zipfile.ZipFile(io.BytesIO(answer.content)).namelist()) == SLICES
        assert engine.metrics.sample_value("mrdserve_pacs_push_total",
                                           {"protocol": "dicomweb", "outcome": "failed"}) == 1
        pushes = [r for r in caplog.records if getattr(r, "event", r.getMessage()) == "pacs_push"
                  or r.getMessage() == "pacs_push"]
        assert pushes and pushes[-1].levelname == "WARNING"
        header = reconstruction[0]
        patient = getattr(getattr(header, "subject_information", None), "patient_name", None)
        assert not patient or all(patient not in r.getMessage() + str(vars(r)) for r in pushes)
    finally:
        client.__exit__(None, None, None)
