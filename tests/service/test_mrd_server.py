"""The MRD streaming server on loopback with a real engine and the bundled demo artifacts.

The server runs in its own thread and event loop (as in `mrdserve serve`); the tests talk to it over TCP with
blocking sockets: our client, ismrmrd's ProtocolSerializer/Deserializer, and hand-made byte streams for the
malformed cases. Images are compared with the REST path (POST format=ismrmrd through a TestClient with its own
engine) for the same files.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest
from fastapi.testclient import TestClient
from ismrmrd.serialization import ConfigFile, ConfigText, ProtocolDeserializer, ProtocolSerializer

from mrdserve.models.data.ismrmrd_io import read_acquisitions
from mrdserve.models.data.simulate import simulate_to_file
from mrdserve.service.api import create_app
from mrdserve.service.config import ServiceConfig
from mrdserve.service.engine.engine import Engine
from mrdserve.service.metrics import ServiceMetrics
from mrdserve.service.mrd.client import slice_key, stream_acquisitions, stream_file
from mrdserve.service.mrd.protocol import (
    Message,
    MessageId,
    StreamEndedError,
    encode_close,
    encode_config_file,
    encode_object,
    encode_text,
    read_message_blocking,
)
from mrdserve.service.mrd.server import MrdServer

HOST = "127.0.0.1"
SHEPP_LOGAN = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
TIMEOUT_S = 60


# ------------------------------------------------------------------------------------------------ fixtures
class ServerThread:
    """An engine and an MrdServer on their own event loop in a daemon thread (port 0 -> a free port)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="mrd-test-server")
        self.thread.start()
        self.engine = Engine(config)
        self.call(self.engine.start(), 120)
        self.server = MrdServer(self.engine, HOST, 0)
        self.call(self.server.start())
        self.port = self.server.port

    def call(self, coroutine, timeout: float = TIMEOUT_S):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.server.stop(grace_s=5))
            self.call(self.engine.shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = ServerThread(ServiceConfig(device="cpu", spool_dir=tmp_path_factory.mktemp("spool")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rest(tmp_path_factory):
    """The REST app with its own engine (an engine lives on one event loop; the TestClient runs another)."""
    config = ServiceConfig(device="cpu", spool_dir=tmp_path_factory.mktemp("rest-spool"), warmup=False)
    with TestClient(create_app(config, Engine(config))) as client:
        for _ in range(600):
            if client.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.1)
        yield client


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("mrd-inputs")
    files = {}
    for trajectory, slices in (("cartesian", 2), ("radial", 2), ("spiral", 1)):
        files[trajectory] = directory / f"{trajectory}.h5"
        simulate_to_file(files[trajectory], trajectory, coils=8, acceleration=4, matrix=96, slices=slices, seed=5)
    if SHEPP_LOGAN:
        files["shepp_logan"] = directory / "shepp_logan.h5"
        subprocess.run([SHEPP_LOGAN, "-m", "96", "-c", "8", "-a", "4", "-w", "16", "-o", str(files["shepp_logan"])],
                       check=True, capture_output=True, timeout=60)
    return files


# ------------------------------------------------------------------------------------------------ helpers
_REST_CACHE: dict[tuple[str, str], list[np.ndarray]] = {}


def rest_images(rest: TestClient, path: Path) -> list[np.ndarray]:
    """Pixel arrays of the REST path's ISMRMRD images for ``path``, in slice order (cached per file)."""
    key = (str(path), "float32")
    if key not in _REST_CACHE:
        with open(path, "rb") as f:
            response = rest.post("/v1/reconstructions", params={"format": "ismrmrd"},
                                 files={"file": ("scan.h5", f)})
        assert response.status_code == 200, response.text
        out = path.with_suffix(".rest.h5")
        out.write_bytes(response.content)
        images = []
        with h5py.File(out, "r") as f:
            groups = [name for name in f["dataset"] if name.startswith("image_")]
        with ismrmrd.Dataset(str(out), "dataset", create_if_needed=False) as dataset:
            for group in groups:
                images += [dataset.read_image(group, i) for i in range(dataset.number_of_images(group))]
        images.sort(key=slice_key)
        _REST_CACHE[key] = [np.array(image.data) for image in images]
    return _REST_CACHE[key]


def assert_same_pixels(streamed: list[ismrmrd.Image], expected: list[np.ndarray]) -> None:
    ordered = sorted(streamed, key=slice_key)
    assert len(ordered) == len(expected)
    for image, reference in zip(ordered, expected, strict=True):
        data = np.array(image.data)
        assert data.shape == reference.shape
        np.testing.assert_allclose(data, reference, rtol=1e-5, atol=1e-5 * float(np.abs(reference).max()))


def connect(server: ServerThread) -> socket.socket:
    sock = socket.create_connection((HOST, server.port), timeout=TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def replies(sock: socket.socket, stream=None) -> list[Message]:
    """Every message until the server's CLOSE (which must come: the list ends with it)."""
    stream = stream or sock.makefile("rb")
    messages = []
    while True:
        try:
            message = read_message_blocking(stream.read)
        except StreamEndedError:
            pytest.fail(f"the server dropped the connection without CLOSE after {[m.id for m in messages]}")
        messages.append(message)
        if message.id == MessageId.CLOSE:
            return messages


def texts(messages: list[Message]) -> list[str]:
    return [m.value for m in messages if m.id == MessageId.TEXT]


def errors(messages: list[Message]) -> list[str]:
    return [text for text in texts(messages) if text.startswith("ERROR")]


def header_bytes(path: Path) -> bytes:
    xml, _ = read_acquisitions(path)
    return encode_text(xml, MessageId.HEADER)


def bad_stream(server: ServerThread, payload: bytes, half_close: bool = False) -> list[Message]:
    with connect(server) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return replies(sock)


# ------------------------------------------------------------------------------------------------ good streams
@pytest.mark.parametrize("trajectory, config, config_text", [
    ("cartesian", "default.xml", False), ("radial", "default", True), ("spiral", "noncartesian", False)])
def test_simulated_streams_equal_the_rest_path(server, rest, inputs, trajectory, config, config_text):
    result = stream_file(inputs[trajectory], HOST, server.port, config=config, config_text=config_text)
    assert result.closed and not result.errors and result.failure is None, result.texts
    _, acquisitions = read_acquisitions(inputs[trajectory])
    slices = {slice_key(a) for a in acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)}
    assert len(result.images) == len(slices)
    assert sorted(image.image_index for image in result.images) == list(range(1, len(slices) + 1))
    artifact = f"demo-{'xpdnet' if trajectory == 'cartesian' else 'ncpdnet-' + trajectory}"
    for image in result.images:
        assert image.image_series_index == 1 and image.image_type == ismrmrd.IMTYPE_MAGNITUDE
        assert image.meta["ImageComments"].startswith(artifact)
        assert image.meta["DataRole"] == "Image" and image.meta["Keep_image_geometry"] == "1"
        assert tuple(image.field_of_view) != (0.0, 0.0, 0.0)
    logged = " ".join(result.texts)
    assert artifact in logged and "done: " in logged and "total=" in logged
    assert_same_pixels(result.images, rest_images(rest, inputs[trajectory]))
    label = result.images[0].meta["ImageComments"].replace(" ", "-")  # "demo-xpdnet 0.12000" -> its label
    assert server.engine.metrics.sample_value(
        "mrdserve_requests_total", {"entrypoint": "mrd", "artifact": label, "outcome": "ok"}) >= len(slices)
    assert server.engine.metrics.sample_value("mrdserve_inflight_requests") == 0  # every slice counted out again


@pytest.mark.parametrize("config_kind", ["file", "text"])
def test_shepp_logan_through_ismrmrd_serializer(server, rest, inputs, config_kind):
    if "shepp_logan" not in inputs:
        pytest.skip("ismrmrd_generate_cartesian_shepp_logan (Debian ismrmrd-tools) is not installed")
    xml, acquisitions = read_acquisitions(inputs["shepp_logan"])
    received: list = []
    with connect(server) as sock:
        reader = threading.Thread(target=lambda: received.extend(ProtocolDeserializer(sock.makefile("rb"))
                                                                 .deserialize()))
        reader.start()
        with sock.makefile("wb") as out:
            serializer = ProtocolSerializer(out)
            serializer.serialize(ConfigFile("default.xml") if config_kind == "file" else ConfigText("default"))
            serializer.serialize(ismrmrd.xsd.CreateFromDocument(xml))
            for acq in acquisitions:
                serializer.serialize(acq)
            serializer.close()
        reader.join(TIMEOUT_S)
    assert not reader.is_alive()  # ismrmrd's deserializer returned: it saw our CLOSE
    images = [item for item in received if isinstance(item, ismrmrd.Image)]
    lines = [item for item in received if isinstance(item, str)]
    assert not [line for line in lines if line.startswith("ERROR")], lines
    assert images and all(image.meta["ImageComments"] for image in images), [i.meta['ImageComments'] for i in images]
    assert_same_pixels(images, rest_images(rest, inputs["shepp_logan"]))


def test_the_first_slice_comes_back_before_the_second_is_sent(server, inputs):
    xml, acquisitions = read_acquisitions(inputs["cartesian"])
    split = next(i for i, a in enumerate(acquisitions) if a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)) + 1
    assert {a.idx.slice for a in acquisitions[split:]} == {1}
    with connect(server) as sock:
        stream = sock.makefile("rb")
        # the header ends with a NUL, as python-ismrmrd-server's client.py sends it
        sock.sendall(encode_config_file("default") + encode_text(xml + "\x00", MessageId.HEADER))
        sock.sendall(b"".join(encode_object(a) for a in acquisitions[:split]))
        first = None
        while first is None:  # slice 1 has not been sent: an image now can only be slice 0's
            message = read_message_blocking(stream.read)
            assert message.id in (MessageId.TEXT, MessageId.IMAGE) and not str(message.value).startswith("ERROR")
            first = message.value if message.id == MessageId.IMAGE else None
        assert first.slice == 0 and first.image_index == 1
        sock.sendall(b"".join(encode_object(a) for a in acquisitions[split:]) + encode_close())
        rest_of_stream = replies(sock, stream)
    kinds = [m.id for m in rest_of_stream]
    assert kinds[-1] == MessageId.CLOSE and MessageId.IMAGE in kinds
    second = next(m.value for m in rest_of_stream if m.id == MessageId.IMAGE)
    assert second.slice == 1 and second.image_index == 2


def test_waveforms_are_kept_out_and_images_passed_back(server, rest, inputs):
    xml, acquisitions = read_acquisitions(inputs["cartesian"])
    waveform = ismrmrd.Waveform.from_array(np.arange(40, dtype=np.uint32).reshape(2, 20))
    client_image = ismrmrd.Image.from_array(np.arange(12, dtype=np.float32).reshape(3, 4))
    client_image.image_series_index = 99
    client_image.meta = ismrmrd.Meta({"Source": "client"})
    stream = [acquisitions[0], waveform, *acquisitions[1:70], waveform, client_image, *acquisitions[70:], waveform]
    with connect(server) as sock:
        sock.sendall(encode_config_file("default") + encode_text(xml, MessageId.HEADER)
                     + b"".join(encode_object(item) for item in stream) + encode_close())
        messages = replies(sock)
    assert not errors(messages), texts(messages)
    images = [m.value for m in messages if m.id == MessageId.IMAGE]
    passed = [image for image in images if image.image_series_index == 99]
    assert len(passed) == 1 and encode_object(passed[0]) == encode_object(client_image)
    assert_same_pixels([image for image in images if image.image_series_index != 99],
                       rest_images(rest, inputs["cartesian"]))
    assert "3 waveforms ignored, 1 images passed back" in texts(messages)[-1]


def test_json_parameters_choose_dtype_and_series(server, inputs):
    result = stream_file(inputs["radial"], HOST, server.port,
                         parameters={"parameters": {"dtype": "uint16", "series_index": 7, "colour": "blue"}})
    assert result.closed and not result.errors, result.texts
    assert all(image.data.dtype == np.uint16 and image.image_series_index == 7 for image in result.images)
    assert all("RealWorldValueSlope" in image.meta for image in result.images)
    assert any("ignored unknown field(s): colour" in text for text in result.texts)
    classical = stream_file(inputs["radial"], HOST, server.port, parameters={"artifact": "classical"})
    assert classical.closed and not classical.errors, classical.texts
    assert all(image.meta["ImageComments"].startswith("classical") for image in classical.images)


class InstantPosterior:
    """Stands in for service.posterior.PosteriorEstimator: the mean is the image, the std map a constant."""

    available = True

    def estimate(self, result, n_samples, time_budget_s, progress=None, cancel=None):
        from mrdserve.service.engine.result import ImageRole

        note = f"{n_samples} of {n_samples} posterior samples from score prior instant-1"
        return [result.posterior(ImageRole.posterior_mean, result.image, note),
                result.posterior(ImageRole.posterior_std, np.full_like(result.image, 0.25), note)]


def test_uncertainty_parameter_sends_posterior_series_after_each_image(server, inputs, monkeypatch):
    monkeypatch.setattr(server.engine, "_posterior", InstantPosterior())
    result = stream_file(inputs["cartesian"], HOST, server.port,
                         parameters={"uncertainty": 4, "series_index": 5})
    assert result.closed and not result.errors, result.texts
    by_series = {}
    for image in result.images:
        by_series.setdefault(image.image_series_index, []).append(image)
    assert sorted(by_series) == [5, 6, 7] and all(len(images) == 2 for images in by_series.values())
    assert [image.meta["DataRole"] for image in by_series[7]] == ["PosteriorStd"] * 2
    assert [image.image_index for image in by_series[6]] == [1, 2]
    assert all("posterior mean: 4 of 4 posterior samples" in image.meta["ImageComments"] for image in by_series[6])
    np.testing.assert_allclose(by_series[7][0].data, 0.25)
    assert any("uncertainty maps from 4 posterior samples" in text for text in result.texts)
    assert sum("uncertainty maps: 4 of 4" in text for text in result.texts) == 2


class FailingPosterior(InstantPosterior):
    def estimate(self, result, n_samples, time_budget_s, progress=None, cancel=None):
        raise RuntimeError("injected sampler failure")


def test_failing_uncertainty_maps_leave_the_images_and_the_stream_intact(server, inputs, monkeypatch):
    monkeypatch.setattr(server.engine, "_posterior", FailingPosterior())
    result = stream_file(inputs["cartesian"], HOST, server.port, parameters={"uncertainty": 2})
    assert result.closed and not result.errors and len(result.images) == 2, result.texts
    assert sum("WARNING: uncertainty maps not made: RuntimeError: injected" in t for t in result.texts) == 2
    too_high = stream_file(inputs["cartesian"], HOST, server.port,
                           parameters={"uncertainty": 2, "series_index": 65534})
    assert len(too_high.errors) == 1 and "series_index: at most 65533" in too_high.errors[0]


@pytest.mark.parametrize("parameters, field", [
    ({"dtype": "int8"}, "dtype"), ({"series_index": -1}, "series_index"), ({"artifact": "no-such-net"}, "no-such-net"),
    ({"uncertainty": 65}, "uncertainty"), ("not json", "JSON")])
def test_bad_json_parameters_name_the_field(server, inputs, parameters, field):
    xml, acquisitions = read_acquisitions(inputs["cartesian"])
    text = parameters if isinstance(parameters, str) else json.dumps(parameters)
    messages = bad_stream(server, encode_config_file("default") + encode_text(xml, MessageId.HEADER)
                          + encode_text(text) + encode_object(acquisitions[0]) + encode_close())
    assert len(errors(messages)) == 1 and field in errors(messages)[0], texts(messages)


def test_a_slice_that_fails_ends_only_its_stream(server, inputs):
    # a radial network asked for Cartesian data: the engine refuses the slice; the stream reports it and ends
    result = stream_file(inputs["cartesian"], HOST, server.port, parameters={"artifact": "demo-ncpdnet-radial"})
    assert result.closed and len(result.errors) == 1 and "does not fit" in result.errors[0], result.texts
    assert server.engine.metrics.sample_value("mrdserve_requests_total", {
        "entrypoint": "mrd", "artifact": "none", "outcome": "failed"}) >= 1
    again = stream_file(inputs["cartesian"], HOST, server.port)
    assert again.closed and not again.errors and len(again.images) == 2


def test_a_reconstruction_crash_ends_only_its_stream(server, inputs, monkeypatch):
    from mrdserve.service.engine.batcher import ReconstructionError

    def crash(sample, plan):
        raise ReconstructionError("injected failure")

    monkeypatch.setattr(server.engine.pipeline, "classical", crash)
    crashed = stream_file(inputs["cartesian"], HOST, server.port, config="classical")
    assert crashed.closed and len(crashed.errors) == 1 and "injected failure" in crashed.errors[0]
    fine = stream_file(inputs["cartesian"], HOST, server.port)  # the engine and the server carry on
    assert fine.closed and not fine.errors and len(fine.images) == 2


def test_stopping_finishes_accepted_streams(server, inputs):
    xml, acquisitions = read_acquisitions(inputs["cartesian"])
    draining = MrdServer(server.engine, HOST, 0)
    server.call(draining.start())
    with socket.create_connection((HOST, draining.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(encode_config_file("default") + encode_text(xml, MessageId.HEADER)
                     + b"".join(encode_object(a) for a in acquisitions[:100]))
        while draining.active_sessions == 0:
            threading.Event().wait(0.01)
        stopping = asyncio.run_coroutine_threadsafe(draining.stop(grace_s=30), server.loop)
        deadline = time.monotonic() + TIMEOUT_S
        while draining.accepting and time.monotonic() < deadline:  # stop() runs on the server's loop
            threading.Event().wait(0.01)
        with pytest.raises(OSError):  # no new connections once stopping
            socket.create_connection((HOST, draining.port), timeout=5).close()
        sock.sendall(b"".join(encode_object(a) for a in acquisitions[100:]) + encode_close())
        messages = replies(sock)
    stopping.result(TIMEOUT_S)
    assert not errors(messages) and len([m for m in messages if m.id == MessageId.IMAGE]) == 2


# ------------------------------------------------------------------------------------------------ bad streams
def test_unknown_config_is_answered_with_an_error_and_close(server, inputs):
    messages = bad_stream(server, encode_config_file("no_such_chain.xml") + header_bytes(inputs["cartesian"]))
    assert len(errors(messages)) == 1
    assert "unknown config 'no_such_chain.xml'" in errors(messages)[0] and "classical" in errors(messages)[0]


def test_noise_dependency_query_gets_close(server):
    # config then CLOSE before any header: Gadgetron answers with CLOSE (no dependencies stored here)
    messages = bad_stream(server, encode_config_file("default_measurement_dependencies.xml") + encode_close())
    assert [m.id for m in messages] == [MessageId.CLOSE]


def test_header_that_is_not_ismrmrd_xml(server):
    for header in ("this is not XML", "<html><body>hello</body></html>\x00"):
        messages = bad_stream(server, encode_config_file("default") + encode_text(header, MessageId.HEADER))
        assert len(errors(messages)) == 1 and "ISMRMRD" in errors(messages)[0], texts(messages)


def test_unknown_message_id(server, inputs):
    messages = bad_stream(server, encode_config_file("default") + header_bytes(inputs["cartesian"])
                          + struct.pack("<H", 777) + b"\x00" * 64)
    assert len(errors(messages)) == 1 and "unknown message id 777" in errors(messages)[0]


def test_truncated_message(server, inputs):
    _, acquisitions = read_acquisitions(inputs["cartesian"])
    messages = bad_stream(server, encode_config_file("default") + header_bytes(inputs["cartesian"])
                          + encode_object(acquisitions[0])[:300], half_close=True)
    assert len(errors(messages)) == 1 and "truncated" in errors(messages)[0]


def test_absurd_sizes_are_refused_before_reading(server, inputs):
    # a 4 GB header: refused at once (the client sends nothing more and still gets its answer)
    messages = bad_stream(server, encode_config_file("default") + struct.pack("<HI", MessageId.HEADER, 0xFFFFFFF0))
    assert len(errors(messages)) == 1 and "exceeds the limit" in errors(messages)[0]
    _, acquisitions = read_acquisitions(inputs["cartesian"])
    huge = bytearray(encode_object(acquisitions[0])[:2 + 340])  # id + acquisition header
    struct.pack_into("<H", huge, 2 + 34, 65535)  # number_of_samples
    struct.pack_into("<H", huge, 2 + 38, 65535)  # active_channels: 65535 x 65535 x 8 bytes is far past the limit
    messages = bad_stream(server, encode_config_file("default") + header_bytes(inputs["cartesian"]) + bytes(huge))
    assert len(errors(messages)) == 1 and "acquisition data" in errors(messages)[0], texts(messages)


def test_a_good_client_keeps_working_while_bad_ones_are_cut(server, rest, inputs):
    xml, acquisitions = read_acquisitions(inputs["cartesian"])
    bad_payloads = [encode_config_file("default") + encode_text("garbage", MessageId.HEADER),
                    encode_config_file("default") + encode_text(xml, MessageId.HEADER) + struct.pack("<H", 4242),
                    b"\xff\xff" + b"\x00" * 100]
    with ThreadPoolExecutor(4) as pool:
        good = pool.submit(stream_acquisitions, HOST, server.port, xml, acquisitions)
        bad = [pool.submit(bad_stream, server, payload) for payload in bad_payloads]
        bad_results = [future.result(TIMEOUT_S) for future in bad]
        result = good.result(TIMEOUT_S)
    assert all(len(errors(messages)) == 1 for messages in bad_results)
    assert result.closed and not result.errors
    assert_same_pixels(result.images, rest_images(rest, inputs["cartesian"]))


def test_sessions_wait_for_the_engine_then_give_up(server, inputs):
    class NotReady:
        ready, artifacts, metrics = False, [], ServiceMetrics()

    waiting = MrdServer(NotReady(), HOST, 0, engine_wait_s=0.3)
    server.call(waiting.start())
    try:
        with socket.create_connection((HOST, waiting.port), timeout=TIMEOUT_S) as sock:
            sock.sendall(encode_config_file("default") + header_bytes(inputs["cartesian"]))
            messages = replies(sock)
    finally:
        server.call(waiting.stop(grace_s=1))
    assert len(errors(messages)) == 1 and "not ready" in errors(messages)[0]


def test_fully_sampled_and_two_coil_streams_reconstruct_as_rest_does(server, rest, tmp_path):
    """The commonest scan (fully sampled, no calibration flags) and a 2-coil scan are answered over MRD with the
    REST path's images, never an error."""
    from tests.scanner_like import fully_sampled_without_flags, two_coil

    for path in (fully_sampled_without_flags(tmp_path / "full.h5", slices=2), two_coil(tmp_path / "two.h5")):
        result = stream_file(path, HOST, server.port)
        assert result.closed and not result.errors, result.texts
        assert_same_pixels(result.images, rest_images(rest, path))
        assert all(np.isfinite(np.array(image.data)).all() for image in result.images)


def test_classical_method_by_config_name_or_parameter(server, inputs):
    """``grappa.xml`` (a method name) and ``{"method": ...}`` choose the classical method; a bad one is an ERROR."""
    from mrdserve.service.mrd.configs import resolve

    assert resolve("GRAPPA.xml", server.engine.artifacts).method == "grappa"
    by_name = stream_file(inputs["cartesian"], HOST, server.port, config="grappa.xml")
    assert by_name.closed and not by_name.errors and len(by_name.images) == 2
    assert all("grappa" in image.meta["ImageComments"] for image in by_name.images)
    by_parameter = stream_file(inputs["cartesian"], HOST, server.port,
                               parameters={"artifact": "classical", "method": "cg-sense"})
    assert by_parameter.closed and not by_parameter.errors and len(by_parameter.images) == 2
    assert all("cg-sense" in image.meta["ImageComments"] for image in by_parameter.images)
    bad = stream_file(inputs["cartesian"], HOST, server.port, parameters={"method": "magic"})
    assert bad.closed and any("method: must be one of" in text for text in bad.errors)


@pytest.mark.parametrize("as_config_text", [False, True], ids=["text-after-header", "config-text"])
def test_openrecon_ui_parameters_round_trip_and_images_carry_their_geometry(server, inputs, as_config_text):
    """OpenRecon's UI parameters (service.openrecon: artifact, method, dtype, series_index, uncertainty) arrive as
    JSON, after the header or as CONFIG_TEXT; the images carry the geometry meta OpenRecon needs."""
    from mrdserve.models.data.ismrmrd_io import read_ismrmrd
    from mrdserve.service.openrecon import label_document

    ui = {p["id"] for p in label_document(server.engine.artifacts)["parameters"]}
    chosen = {"artifact": "classical", "method": "cg-sense", "dtype": "uint16", "series_index": 3, "uncertainty": 0}
    assert set(chosen) == ui
    document = {"parameters": {"config": "default", **chosen}}
    if as_config_text:
        result = stream_file(inputs["cartesian"], HOST, server.port, config=json.dumps(document), config_text=True)
    else:
        result = stream_file(inputs["cartesian"], HOST, server.port, parameters=document)
    assert result.closed and not result.errors and len(result.images) == 2
    samples = read_ismrmrd(inputs["cartesian"])[1]
    for image, sample in zip(sorted(result.images, key=lambda i: i.slice), samples, strict=True):
        assert "classical cg-sense" in image.meta["ImageComments"] and image.image_series_index == 3
        assert np.asarray(image.data).dtype == np.uint16 and float(image.meta["RealWorldValueSlope"]) > 0
        assert image.meta["DataRole"] == "Image" and image.meta["Keep_image_geometry"] == "1"
        np.testing.assert_allclose([float(v) for v in image.meta["ImageRowDir"]], sample.geometry.read_dir)
        np.testing.assert_allclose([float(v) for v in image.meta["ImageColumnDir"]], sample.geometry.phase_dir)
