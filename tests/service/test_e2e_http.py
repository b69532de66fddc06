"""End to end over real HTTP on loopback: `mrdserve serve` in a subprocess with the bundled demo artifacts.

Simulated Cartesian and radial files and an `ismrmrd_generate_cartesian_shepp_logan` file come back as valid
DICOM; NIfTI and ISMRMRD images carry the geometry; concurrency, back-pressure, bad inputs, SIGKILL recovery of
spooled jobs and the metrics. Every wait is bounded by count and time; only 127.0.0.1 is used.
"""

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import httpx
import ismrmrd
import nibabel
import numpy as np
import pydicom
import pytest

from mrdserve.models.data.ismrmrd_io import read_ismrmrd
from tests.service.test_api import bad_inputs, simulate

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
UPLOAD_MAX = 8_000_000
SHEPP_LOGAN = shutil.which("ismrmrd_generate_cartesian_shepp_logan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """`python -m service.cli serve` on free loopback ports; stopped (SIGTERM, then SIGKILL) by ``stop``."""

    def __init__(self, spool: Path, log: Path, *flags: str) -> None:
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "mrdserve.service.cli", "serve", "--host", HOST, "--port", str(self.port),
                   "--mrd-port", str(_free_port()), "--device", "cpu", "--spool-dir", str(spool),
                   "--upload-max-bytes", str(UPLOAD_MAX), *flags]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MRDSERVE_")}
        with open(log, "ab") as sink:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=env)

    def wait(self, path: str = "/readyz", timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not answering {path} within {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("inputs")
    files = {trajectory: simulate(directory / f"{trajectory}.h5", trajectory, matrix=96, coils=8, acceleration=4)
             for trajectory in ("cartesian", "radial")}
    if SHEPP_LOGAN:
        subprocess.run([SHEPP_LOGAN, "-m", "96", "-c", "8", "-a", "4", "-w", "16", "-o",
                        str(directory / "shepp_logan.h5")], check=True, capture_output=True, timeout=60)
        files["shepp_logan"] = directory / "shepp_logan.h5"
    return files


@contextlib.contextmanager
def ready_server(directory: Path, *flags: str) -> Iterator[Server]:
    """A ready ``mrdserve serve`` with its spool and log in ``directory``, stopped on exit."""
    running = Server(directory / "spool", directory / "server.log", *flags)
    try:
        running.wait()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ready_server(tmp_path_factory.mktemp("server")) as running:
        yield running


def _post(url: str, path: Path, timeout: float = 60, **params) -> httpx.Response:
    with open(path, "rb") as f:
        return httpx.post(url + "/v1/reconstructions", params=params, files={"file": ("scan.h5", f)},
                          timeout=timeout)


def _dicom_files(response: httpx.Response) -> list[tuple[str, bytes]]:
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    return [(name, archive.read(name)) for name in archive.namelist() if name.endswith(".dcm")]


def test_dicom_comes_back_readable_and_valid(server, inputs, tmp_path):
    if "shepp_logan" not in inputs:
        pytest.skip("ismrmrd_generate_cartesian_shepp_logan (Debian ismrmrd-tools) is not installed")
    dciodvfy = shutil.which("dciodvfy")
    for name, path in inputs.items():
        _, samples = read_ismrmrd(path)
        response = _post(server.url, path, format="dicom")
        assert response.status_code == 200, (name, response.text)
        files = _dicom_files(response)
        assert len(files) == len(samples), name
        uids = set()
        for member, data in files:
            dataset = pydicom.dcmread(io.BytesIO(data))
            assert dataset.Modality == "MR" and (dataset.Rows, dataset.Columns) == samples[0].recon_matrix[-2:]
            assert dataset.pixel_array.max() > 0
            uids.add(dataset.SeriesInstanceUID)
            if dciodvfy:
                target = tmp_path / f"{name}-{Path(member).name}"
                target.write_bytes(data)
                report = subprocess.run([dciodvfy, str(target)], capture_output=True, text=True, timeout=60)
                errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
                assert not errors, (name, errors)
        assert len(uids) == 1, name  # one series per request


def test_nifti_and_ismrmrd_images_carry_the_geometry(server, inputs, tmp_path):
    path = inputs["cartesian"]
    _, samples = read_ismrmrd(path)
    geometry, matrix = samples[0].geometry, samples[0].recon_matrix
    spacing = np.array(geometry.field_of_view[:2]) / np.array(matrix[::-1])  # (x, y) mm per pixel
    response = _post(server.url, path, format="nifti")
    assert response.status_code == 200, response.text
    (tmp_path / "images.nii.gz").write_bytes(response.content)
    image = nibabel.load(tmp_path / "images.nii.gz")
    voxel_sizes = np.linalg.norm(image.affine[:3, :3], axis=0)
    assert sorted(np.round(voxel_sizes[:2], 3)) == sorted(np.round(spacing, 3))
    assert np.isclose(np.linalg.norm(image.affine[:3, 3]), np.linalg.norm(geometry.position), atol=0.5 * max(
        spacing) * np.sqrt(2) * max(matrix) + 1e-3)
    response = _post(server.url, path, format="ismrmrd")
    assert response.status_code == 200, response.text
    (tmp_path / "images.h5").write_bytes(response.content)
    with h5py.File(tmp_path / "images.h5", "r") as f:
        groups = [name for name in f["dataset"] if name.startswith("image")]
    dataset = ismrmrd.Dataset(str(tmp_path / "images.h5"), "dataset", create_if_needed=False)
    try:
        image = dataset.read_image(groups[0], 0)
        assert np.allclose(image.field_of_view[:2], geometry.field_of_view[:2], atol=1e-3)
        assert np.allclose(image.position, geometry.position, atol=1e-3)
        assert np.allclose(image.read_dir, geometry.read_dir, atol=1e-5)
        assert image.data.shape[-2:] == matrix[-2:]
    finally:
        dataset.close()


def test_sixteen_simultaneous_requests_and_a_poisoned_one(server, inputs, tmp_path):
    poisoned = bad_inputs(inputs["cartesian"], tmp_path / "bad")["non_finite"][0]
    jobs = [inputs["radial" if i % 2 else "cartesian"] for i in range(16)] + [poisoned]
    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(lambda p: _post(server.url, p, timeout=90, format="png"), jobs))
    for response in responses[:16]:
        assert response.status_code == 200, response.text
        names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
        assert len(names) == 1 and names[0].endswith(".png")
    assert 400 <= responses[16].status_code < 600 and "NaN" in responses[16].json()["message"]
    labels = {r.headers["x-mrdserve-labels"] for r in responses[:16]}
    assert len(labels) == 2  # Cartesian and radial went to their own makers


def test_every_bad_input_gets_its_4xx_and_the_service_stays_healthy(server, inputs, tmp_path):
    for name, (path, status, code, word) in bad_inputs(inputs["cartesian"], tmp_path / "bad").items():
        response = _post(server.url, path)
        assert response.status_code == status, (name, response.text)
        body = response.json()
        assert body["error"] == code and word.lower() in body["message"].lower(), (name, body)
    too_large = tmp_path / "large.h5"
    too_large.write_bytes(b"\0" * (UPLOAD_MAX + 100_000))
    response = _post(server.url, too_large)
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    assert httpx.get(server.url + "/healthz", timeout=5).json()["status"] == "ok"
    assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200
    assert _post(server.url, inputs["radial"], format="png").status_code == 200


def test_metrics_after_traffic_include_every_stage(server, inputs):
    assert _post(server.url, inputs["radial"], format="png").status_code == 200
    text = httpx.get(server.url + "/metrics", timeout=5).text
    for stage in ("ingest", "preparation", "queue", "inference", "output", "total"):
        line = next(line for line in text.splitlines() if line.startswith(f'mrdserve_stage_seconds_count{{stage="'
                                                                          f'{stage}"}}'))
        assert float(line.split()[-1]) > 0, stage
    assert "mrdserve_batch_size_bucket" in text and 'entrypoint="rest"' in text
    models = httpx.get(server.url + "/v1/models", timeout=5).json()["models"]
    assert "demo-ncpdnet-radial" in {m["name"] for m in models}
    assert httpx.get(server.url + "/openapi.json", timeout=5).json()["paths"]["/v1/reconstructions"]["post"]


def test_async_jobs_survive_sigkill_and_a_full_queue_answers_503(inputs, tmp_path):
    spool = tmp_path / "spool"
    # the first server holds jobs in its batcher (a batch of 8 or a 10-minute wait), so the kill finds them unfinished
    first = Server(spool, tmp_path / "first.log", "--max-batch", "8", "--max-wait-ms", "600000")
    ids = []
    try:
        first.wait("/healthz")  # async jobs are accepted (spooled) even before the engine is warm
        for _ in range(4):
            response = httpx.post(first.url + "/v1/reconstructions", params={"mode": "async", "format": "png"},
                                  files={"file": ("scan.h5", inputs["radial"].read_bytes())},
                                  timeout=30)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
    finally:
        first.kill()
    pending = [job for job in ids if '"state": "succeeded"' not in (spool / "jobs" / job / "status.json").read_text()]
    assert pending, "every job finished before the kill; the restart path was not exercised"
    second = Server(spool, tmp_path / "second.log", "--max-batch", "1", "--queue-size", "1")
    try:
        second.wait()
        deadline, states = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            states = {job: httpx.get(f"{second.url}/v1/reconstructions/{job}", timeout=5).json() for job in ids}
            if all(s["state"] in ("succeeded", "failed") for s in states.values()):
                break
            time.sleep(0.2)
        for job, status in states.items():
            assert status["state"] == "succeeded" or status["error"], status
            if status["state"] == "succeeded":
                result = httpx.get(f"{second.url}/v1/reconstructions/{job}/result", timeout=10)
                assert result.status_code == 200 and zipfile.ZipFile(io.BytesIO(result.content)).namelist()
        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(lambda _: _post(second.url, inputs["radial"], timeout=60, format="png"),
                                      range(24)))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes
        for response in responses:
            if response.status_code == 503:
                assert int(response.headers["retry-after"]) >= 1 and response.json()["error"] == "queue_full"
        assert httpx.get(second.url + "/healthz", timeout=5).json()["status"] == "ok"
    finally:
        second.stop()


def test_sigterm_drains_a_synchronous_request_and_a_second_instance_keeps_off_the_spool(tmp_path):
    """SIGTERM while a request runs: it is answered, then the process exits 0; a second `mrdserve serve` on the
    same spool refuses to start (it would re-run the first one's jobs)."""
    from mrdserve.service.cli import main
    scan = tmp_path / "slices.h5"
    assert main(["simulate", str(scan), "--matrix", "128", "--coils", "8", "--acceleration", "4", "--slices", "6",
                 "--seed", "2"]) == 0
    first = Server(tmp_path / "spool", tmp_path / "first.log")
    try:
        first.wait()
        second = Server(tmp_path / "spool", tmp_path / "second.log")
        assert second.process.wait(timeout=120) == 1
        assert "in use by another mrdserve process" in (tmp_path / "second.log").read_text()
        answer: dict[str, httpx.Response] = {}
        request = threading.Thread(target=lambda: answer.setdefault("r", _post(
            first.url, scan, timeout=120, artifact="classical", method="l1-wavelet", format="png")))
        request.start()
        deadline = time.monotonic() + 30
        while "mrdserve_inflight_requests 1.0" not in httpx.get(first.url + "/metrics").text:
            assert time.monotonic() < deadline and request.is_alive()
            time.sleep(0.05)
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=90) == 0
        request.join(30)
        assert answer["r"].status_code == 200 and answer["r"].headers["x-mrdserve-slices"] == "6"
    finally:
        first.stop()
