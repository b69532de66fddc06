"""Hostile input on every entry point: each refused with a 4xx / ERROR / CLI message naming what is wrong and the
limit it breaks, before anything is allocated from it; idle and slow clients dropped; no patient data in logs."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from mrdserve.models.data.hostile import HOSTILE_EDITS, PATIENT_NAME, hostile_files
from mrdserve.models.data.ismrmrd_io import read_acquisitions
from mrdserve.service.admission import Budget
from mrdserve.service.api import create_app
from mrdserve.service.cli import main
from mrdserve.service.config import ServiceConfig
from mrdserve.service.log import JsonFormatter
from mrdserve.service.mrd.protocol import MessageId, encode_close, encode_config_file, encode_object, encode_text
from mrdserve.service.mrd.server import MrdServer
from tests.service.hostile_peers import StreamEngine, UvicornThread, run_session, small_file
from tests.service.test_api import FakeEngine

# what each hostile file gets from REST: (status, error code, a phrase the message must hold)
EXPECTED = {
    "not_hdf5": (415, "not_hdf5", "not HDF5"),
    "truncated": (422, "unreadable_hdf5", "truncated or corrupt"),
    "xml_integer": (422, "bad_header_dataset", "must hold the header as a string"),
    "xml_zero_length": (422, "bad_header_dataset", "is empty"),
    "xml_empty_string": (422, "invalid_ismrmrd_header", "is empty"),
    "xml_not_ismrmrd": (422, "invalid_ismrmrd_header", "not valid ISMRMRD XML"),
    "xml_billion_laughs": (422, "invalid_ismrmrd_header", "ISMRMRD"),
    "xml_40mb": (413, "beyond_limit", "beyond the limit of 16777216 bytes"),
    "header_value_of_wrong_type": (422, "invalid_ismrmrd_header", "receiverChannels does not hold a valid int"),
    "matrix_100000x100000": (413, "beyond_limit", "MRDSERVE_MAX_MATRIX"),
    "matrix_256x100000": (413, "beyond_limit", "matrix size y is 100000, beyond the limit of 1024"),
    "matrix_zero": (422, "invalid_ismrmrd_header", "must be at least 1"),
    "slices_65535": (413, "beyond_limit", "MRDSERVE_MAX_SLICES"),
    "data_not_acquisitions": (422, "bad_data_dataset", "dataset of acquisitions"),
    "data_20m_records": (413, "beyond_limit", "20000000 acquisitions"),
    "data_1m_empty_records": (422, "inconsistent_data", "declares no samples"),
    "channels_beyond_data": (422, "inconsistent_data", "its header says 64 channels"),
    "samples_beyond_data": (422, "inconsistent_data", "more than twice the encoded readout"),
    "line_outside_matrix": (422, "inconsistent_data", "outside the encoded matrix"),
    "slice_index_huge": (413, "beyond_limit", "MRDSERVE_MAX_SLICES"),
    "nan_kspace": (422, "non_finite_data", "NaN"),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("hostile")
    return dict(hostile_files(small_file(directory / "good.h5"), directory / "cases"))


@pytest.fixture()
def json_log():
    """Every log line of the test as JSON text (the service's own handler)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    yield stream
    logging.captureWarnings(False)
    root.removeHandler(handler)
    root.setLevel(level)


def _good(hostile: dict[str, Path]) -> Path:
    return hostile["nan_kspace"].parent.parent / "good.h5"


def _client(tmp_path: Path, **overrides) -> TestClient:
    """The REST app with the default admission budget and a fake engine."""
    config = ServiceConfig(spool_dir=tmp_path / "spool", device="cpu", **overrides)
    return TestClient(create_app(config, FakeEngine()), raise_server_exceptions=False)


def test_every_hostile_case_has_an_expectation():
    assert set(EXPECTED) == set(HOSTILE_EDITS)


def test_rest_refuses_each_hostile_file_with_a_4xx_naming_it(tmp_path, hostile, json_log):
    with _client(tmp_path) as client:
        for name, path in hostile.items():
            status, code, phrase = EXPECTED[name]
            with open(path, "rb") as f:
                response = client.post("/v1/reconstructions", files={"file": ("scan.h5", f)})
            body = response.json()
            assert (response.status_code, body["error"]) == (status, code), (name, body)
            assert phrase in body["message"], (name, body["message"])
            assert PATIENT_NAME not in body["message"]
        assert client.get("/healthz").json()["status"] == "ok"
    log = json_log.getvalue()
    assert PATIENT_NAME not in log and "Jane" not in log
    assert all(line.startswith("{") for line in log.splitlines() if line.strip())


def test_async_jobs_refuse_hostile_files_with_the_same_reasons(tmp_path, hostile):
    with _client(tmp_path) as client:
        ids = {}
        for name in ("header_value_of_wrong_type", "matrix_256x100000", "data_not_acquisitions"):
            accepted = client.post("/v1/reconstructions?mode=async", content=hostile[name].read_bytes())
            assert accepted.status_code == 202
            ids[name] = accepted.json()["id"]
        for name, job_id in ids.items():
            deadline = time.monotonic() + 30
            while (status := client.get(f"/v1/reconstructions/{job_id}").json())["state"] not in ("failed",
                                                                                                  "succeeded"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert status["state"] == "failed" and status["error_status"] == EXPECTED[name][0], status
            assert EXPECTED[name][2] in status["error"] and "internal" not in status["error"]


def test_recon_cli_refuses_each_hostile_file_with_a_message(tmp_path, hostile, capsys, monkeypatch):
    for variable in ("MRDSERVE_MAX_REQUEST_BYTES", "MRDSERVE_MAX_MATRIX", "MRDSERVE_MAX_SLICES"):
        monkeypatch.delenv(variable, raising=False)
    for name, path in hostile.items():
        code = main(["recon", str(path), "-o", str(tmp_path / name), "--artifact", "classical", "--method", "rss"])
        captured = capsys.readouterr()
        assert code == 2, (name, captured.err)
        assert captured.err.startswith("mrdserve recon: ") and EXPECTED[name][2] in captured.err, (name, captured.err)
        assert "Traceback" not in captured.err and PATIENT_NAME not in captured.err


def test_unknown_and_repeated_query_parameters_are_refused(tmp_path, hostile):
    good = _good(hostile)
    with _client(tmp_path) as client:
        for query, code, phrase in (("fromat=png", "unknown_parameter", "fromat"),
                                    ("format=dicom&format=png", "repeated_parameter", "format")):
            response = client.post(f"/v1/reconstructions?{query}", files={"file": good.open("rb")})
            assert response.status_code == 422 and response.json()["error"] == code
            assert phrase in response.json()["message"]
        assert client.get("/v1/models?verbose=1").status_code == 422
        assert client.post("/v1/reconstructions?format=png", files={"file": good.open("rb")}).status_code == 200


def test_multipart_parts_and_side_fields_are_bounded(tmp_path, hostile):
    good = _good(hostile).read_bytes()
    boundary = "b0undary"
    many = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"x{i}\"\r\n\r\n\r\n" for i in range(5000))
    body = (many + f"--{boundary}--\r\n").encode()
    with _client(tmp_path) as client:
        headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
        response = client.post("/v1/reconstructions", content=body, headers=headers)
        assert response.status_code == 400 and "more than 16 parts" in response.json()["message"]
        big_field = {"note": "x" * (1024 * 1024)}
        response = client.post("/v1/reconstructions", data=big_field, files={"file": ("scan.h5", good)})
        assert response.status_code == 413 and "other than 'file'" in response.json()["message"]


def test_docs_are_served_without_a_cdn(tmp_path):
    with _client(tmp_path) as client:
        page = client.get("/docs").text
        assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        assert "https://" not in page and "http://" not in page
        assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
        assert "cdn" not in client.get("/redoc").text.lower()


@pytest.mark.parametrize("value", [",", " ", " , "])
def test_blank_api_key_lists_are_refused_at_start(value, capsys):
    with pytest.raises(ValueError, match="MRDSERVE_API_KEYS is set but holds no key"):
        ServiceConfig.from_env_and_args({}, env={"MRDSERVE_API_KEYS": value})


# ------------------------------------------------------------------------------------------------ MRD
def _stream(path: Path, header_edit=None, acquisition_edit=None, config: str = "default") -> bytes:
    xml, acquisitions = read_acquisitions(path)
    if header_edit is not None:
        xml = header_edit(xml)
    if acquisition_edit is not None:
        acquisition_edit(acquisitions)
    return (encode_config_file(config) + encode_text(xml, MessageId.HEADER)
            + b"".join(encode_object(a) for a in acquisitions) + encode_close())


def _error_of(messages) -> str:
    texts = [m.value for m in messages if m.id == MessageId.TEXT and m.value.startswith("ERROR")]
    assert messages and messages[-1].id == MessageId.CLOSE
    return texts[0] if texts else ""


def test_mrd_refuses_hostile_headers_and_data_before_buffering(hostile, tmp_path):
    good = _good(hostile)
    engine = StreamEngine()
    assert _error_of(run_session(_stream(good), engine)) == ""
    huge = _stream(good, lambda xml: xml.replace("<y>16</y>", "<y>100000</y>", 1))
    assert "MRDSERVE_MAX_MATRIX" in _error_of(run_session(huge, engine))
    wrong = _stream(good, lambda xml: xml.replace("<receiverChannels>2</receiverChannels>",
                                                  f"<receiverChannels>{PATIENT_NAME}</receiverChannels>"))
    error = _error_of(run_session(wrong, engine))
    assert "receiverChannels does not hold a valid int" in error and PATIENT_NAME not in error

    def poison(acquisitions):
        acquisitions[-1].data[:] = float("nan")

    assert "NaN or infinite" in _error_of(run_session(_stream(good, acquisition_edit=poison), engine))

    def many_coils(acquisitions):  # the header's 2 coils admitted a 16x512 image; 1024 coils would need GBs
        import ismrmrd
        acquisitions[-1] = ismrmrd.Acquisition.from_array(np.zeros((1024, 32), np.complex64))
    tall = _stream(good, lambda xml: xml.replace("<y>16</y>", "<y>512</y>", 1), acquisition_edit=many_coils)
    error = _error_of(run_session(tall, engine, budget=Budget(max_request_bytes=256 * 1024**2)))
    assert "1024 coils" in error and "MRDSERVE_MAX_REQUEST_BYTES" in error

    def without_slice_ends(acquisitions):  # every line opens a new image: buffering grows until the budget
        for i, acquisition in enumerate(acquisitions):
            acquisition.clear_all_flags()
            acquisition.idx.slice = i % 1000
    budget = Budget(max_request_bytes=2048)
    error = _error_of(run_session(_stream(good, acquisition_edit=without_slice_ends), engine, budget=budget))
    assert "MRDSERVE_MAX_REQUEST_BYTES" in error


def test_mrd_idle_clients_are_closed_and_connections_are_capped():
    async def scenario() -> tuple[bytes, bytes, bytes, float]:
        server = MrdServer(StreamEngine(), "127.0.0.1", 0, read_timeout_s=0.5, max_connections=2)
        await server.start()
        try:
            started = time.monotonic()
            idle_reader, _idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
            busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", server.port)
            busy_writer.write(b"\x01")  # one byte of a message id, then nothing
            await asyncio.sleep(0.1)
            extra_reader, _ = await asyncio.open_connection("127.0.0.1", server.port)
            refused = await asyncio.wait_for(extra_reader.read(), 10)
            idle = await asyncio.wait_for(idle_reader.read(), 10)
            closed_after = time.monotonic() - started
            slow = await asyncio.wait_for(busy_reader.read(), 10)
            return refused, idle, slow, closed_after
        finally:
            await server.stop(grace_s=1)

    refused, idle, slow, closed_after = asyncio.run(scenario())
    assert b"open MRD streams, its limit (MRDSERVE_MAX_CONNECTIONS)" in refused
    assert b"no message for 0.5 s" in idle and closed_after < 10
    assert b"no message for 0.5 s" in slow


def test_mrd_allow_list_refuses_other_addresses():
    async def scenario() -> bytes:
        server = MrdServer(StreamEngine(), "127.0.0.1", 0, allow=[ipaddress.ip_network("10.0.0.0/8")])
        await server.start()
        try:
            reader, _ = await asyncio.open_connection("127.0.0.1", server.port)
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            await server.stop(grace_s=1)

    assert b"may not open MRD streams (MRDSERVE_MRD_ALLOW)" in asyncio.run(scenario())
    with pytest.raises(ValueError, match="mrd_allow"):
        ServiceConfig(mrd_allow=["not-a-network"])


# ------------------------------------------------------------------------------------------------ slow HTTP clients
@pytest.fixture()
def http_server(tmp_path):
    config = ServiceConfig(spool_dir=tmp_path / "spool", device="cpu", read_timeout_s=0.5)
    server = UvicornThread(create_app(config, FakeEngine()), read_timeout_s=0.5, max_connections=4)
    yield server
    server.stop()


def _closed_by_server(sock: socket.socket, trickle: bytes = b"", deadline_s: float = 10) -> bytes:
    """Bytes the server sent before closing (sending ``trickle`` one byte every 0.1 s meanwhile)."""
    sock.settimeout(0.1)
    received = b""
    deadline = time.monotonic() + deadline_s
    position = 0
    while time.monotonic() < deadline:
        if position < len(trickle):
            try:
                sock.sendall(trickle[position:position + 1])
            except OSError:
                return received
            position += 1
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open for {deadline_s} s")


def test_http_connections_that_send_nothing_or_trickle_are_closed(http_server):
    address = ("127.0.0.1", http_server.port)
    with socket.create_connection(address) as silent:
        assert _closed_by_server(silent) == b""
    with socket.create_connection(address) as slowloris:
        assert _closed_by_server(slowloris, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200) == b""
    with socket.create_connection(address) as slow_body:
        slow_body.sendall(b"POST /v1/reconstructions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                          b"Content-Type: application/octet-stream\r\n\r\nabc")
        answer = _closed_by_server(slow_body)
        assert answer.startswith(b"HTTP/1.1 408") and b"read_timeout" in answer
    assert httpx.get(f"http://127.0.0.1:{http_server.port}/healthz", timeout=5).status_code == 200


def test_http_connections_beyond_the_cap_get_503(http_server):
    address = ("127.0.0.1", http_server.port)
    idle = [socket.create_connection(address) for _ in range(4)]
    try:
        time.sleep(0.1)
        answer = httpx.get(f"http://127.0.0.1:{http_server.port}/healthz", timeout=5)
        assert answer.status_code == 503
    finally:
        for sock in idle:
            sock.close()
