"""A real Orthanc PACS on loopback for the push tests: free ports, storage in a temporary directory."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ORTHANC = shutil.which("Orthanc") or shutil.which("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ORTHANC_AET = "ORTHANC"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class OrthancServer:
    http_port: int
    dicom_port: int

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.rest}/dicom-web"

    @property
    def dicom(self) -> str:
        return f"127.0.0.1:{self.dicom_port}"

    def series_instances(self, series_uid: str) -> list[dict]:
        """The instances Orthanc holds for one SeriesInstanceUID (tools/find at instance level)."""
        answer = httpx.post(f"{self.rest}/tools/find", json={
            "Level": "Instance", "Query": {"SeriesInstanceUID": series_uid}, "Expand": True}, timeout=10)
        answer.raise_for_status()
        return answer.json()


@contextmanager
def run_orthanc(directory: Path) -> Iterator[OrthancServer]:
    """Start Orthanc with a JSON config in ``directory`` (DICOMweb plugin on), wait for its REST API, stop it."""
    server = OrthancServer(free_port(), free_port())
    config = {
        "Name": "mrdserve-test", "StorageDirectory": str(directory / "storage"),
        "IndexDirectory": str(directory / "index"), "HttpPort": server.http_port, "DicomPort": server.dicom_port,
        "DicomAet": ORTHANC_AET, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": True, "HttpServerEnabled": True,
        "DicomServerEnabled": True, "ConcurrentJobs": 1, "HttpThreadsCount": 4, "StableAge": 1,
        "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    path = directory / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(directory / "orthanc.log", "wb")  # noqa: SIM115 (closed below, after the process)
    process = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {process.returncode}: "
                                   f"{(directory / 'orthanc.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{server.rest}/system", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not answer on its REST port within 30 s")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
