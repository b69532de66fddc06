"""The ``<connect>`` form through our own listener (in-process, sharing one engine): raw acquisitions, ReconData
built the way BucketToBuffer would (after RemoveROOversampling) equal to the raw path, pass-back of waveforms,
and every failure (unknown id, engine error, bad handshake) answered with ERROR then CLOSE."""

from __future__ import annotations

import socket
import struct
import threading

import ismrmrd
import numpy as np
import pytest

from mrdserve.gadgets.connection import GadgetConnection
from mrdserve.gadgets.listen import Listener
from mrdserve.gadgets.reconstruct import GadgetSession
from mrdserve.gadgets.settings import GadgetSettings
from mrdserve.service.engine.batcher import ReconstructionError
from mrdserve.service.mrd.protocol import MessageId, encode_text
from tests.gadgets.checks import assert_images_match
from tests.gadgets.conftest import expected_results
from tests.gadgets.gadgetron_side import (
    TIMEOUT_S,
    collect,
    config_text,
    recon_data_messages,
    stream_bytes,
    without_readout_oversampling,
)


@pytest.fixture(scope="module")
def listener(engine):
    listener = Listener("127.0.0.1", 0, engine=engine, read_timeout_s=TIMEOUT_S)
    thread = listener.start()
    yield listener
    listener.close()
    thread.join(TIMEOUT_S)


def _exchange(listener, payload: bytes):
    with socket.create_connection(("127.0.0.1", listener.port), TIMEOUT_S) as sock:
        return collect(sock, payload)


def test_raw_acquisitions_through_the_listener(listener, engine, cartesian):
    header, acquisitions = cartesian
    messages = _exchange(listener, stream_bytes(config_text(artifact="demo-xpdnet"), header, acquisitions))
    assert_images_match(messages, expected_results(engine, header, acquisitions))


def test_recon_data_after_remove_ro_oversampling_equals_the_raw_path(listener, engine, cartesian_quiet):
    header, acquisitions = cartesian_quiet
    buffers = recon_data_messages(without_readout_oversampling(acquisitions, header), header)
    assert len(buffers) == 2  # one per slice
    messages = _exchange(listener, stream_bytes(config_text(), header, buffers))
    assert_images_match(messages, expected_results(engine, header, acquisitions), rtol=1e-4)


def test_radial_recon_data_carries_the_trajectory(listener, engine, radial):
    header, acquisitions = radial
    messages = _exchange(listener, stream_bytes(config_text(), header, recon_data_messages(acquisitions, header)))
    assert_images_match(messages, expected_results(engine, header, acquisitions, prewhiten=False), rtol=1e-4)


def test_waveforms_are_passed_back_not_reconstructed(listener, engine, cartesian):
    header, acquisitions = cartesian
    waveform = ismrmrd.Waveform.from_array(np.arange(8, dtype=np.uint32).reshape(1, 8))
    messages = _exchange(listener, stream_bytes(config_text(), header, [waveform, *acquisitions]))
    assert messages[0].id == MessageId.WAVEFORM
    np.testing.assert_array_equal(messages[0].value.data, waveform.data)
    assert_images_match(messages[1:], expected_results(engine, header, acquisitions))


def test_unknown_message_id_is_an_error_not_a_silent_stop(listener, cartesian):
    header, acquisitions = cartesian
    unknown = struct.pack("<H", 4242) + b"\x00" * 16
    messages = _exchange(listener, stream_bytes(config_text(), header, [*acquisitions[:3], unknown]))
    assert [m.id for m in messages] == [MessageId.ERROR, MessageId.CLOSE]
    assert "unknown message id 4242" in messages[0].value


def test_unsupported_known_message_is_an_error(listener, cartesian):
    header, _ = cartesian
    array = struct.pack("<HHHHQf", MessageId.NDARRAY, ismrmrd.DATATYPE_FLOAT, 0, 1, 1, 1.0)
    messages = _exchange(listener, stream_bytes(config_text(), header, [array]))
    assert [m.id for m in messages] == [MessageId.ERROR, MessageId.CLOSE]
    assert "1030" in messages[0].value


def test_bad_handshake_and_bad_configuration_are_answered(listener, cartesian):
    header, acquisitions = cartesian
    messages = _exchange(listener, encode_text(header, MessageId.HEADER))
    assert [m.id for m in messages] == [MessageId.ERROR, MessageId.CLOSE]
    assert "expected CONFIG" in messages[0].value
    messages = _exchange(listener, stream_bytes(config_text(colour="blue"), header, acquisitions))
    assert [m.id for m in messages] == [MessageId.ERROR, MessageId.CLOSE]
    assert "unknown gadget property colour" in messages[0].value
    messages = _exchange(listener, stream_bytes(config_text(), "<not-ismrmrd/>", acquisitions))
    assert [m.id for m in messages] == [MessageId.ERROR, MessageId.CLOSE]


def test_engine_failure_is_reported_with_error_then_close(cartesian):
    header, acquisitions = cartesian
    ours, theirs = socket.socketpair()

    def failing(samples):
        raise ReconstructionError("reconstruction with demo-xpdnet failed: RuntimeError: injected")

    def serve():
        connection = GadgetConnection.accept_handshake(theirs, read_timeout_s=TIMEOUT_S)
        outcome.append(GadgetSession(connection, settings=GadgetSettings(), run_samples=failing).run())

    outcome: list[bool] = []
    thread = threading.Thread(target=serve)
    thread.start()
    with ours:
        messages = collect(ours, stream_bytes(config_text(), header, acquisitions))
    thread.join(TIMEOUT_S)
    assert [m.id for m in messages] == [MessageId.ERROR, MessageId.CLOSE]
    assert "injected" in messages[0].value and "ReconstructionError" in messages[0].value
    assert outcome == [False]


def test_silent_peer_times_out_with_error(cartesian):
    header, _ = cartesian
    ours, theirs = socket.socketpair()
    connection = GadgetConnection(theirs, config_text(), header, read_timeout_s=0.3)
    thread = threading.Thread(target=lambda: GadgetSession(connection, settings=GadgetSettings(),
                                                           run_samples=lambda s: []).run())
    thread.start()
    with ours:
        messages = collect(ours, b"")  # sends nothing, never closes
    thread.join(TIMEOUT_S)
    assert [m.id for m in messages] == [MessageId.ERROR, MessageId.CLOSE]
    assert "no data from Gadgetron for 0.3 s" in messages[0].value


def test_fully_sampled_and_two_coil_scans_through_the_listener(listener, engine, tmp_path):
    """No calibration flags and full sampling, or 2 coils: images, never ERROR, equal to our own ingest."""
    from mrdserve.models.data.ismrmrd_io import read_acquisitions
    from tests.scanner_like import fully_sampled_without_flags, two_coil

    for path in (fully_sampled_without_flags(tmp_path / "full.h5"), two_coil(tmp_path / "two.h5")):
        header, acquisitions = read_acquisitions(path)
        messages = _exchange(listener, stream_bytes(config_text(), header, acquisitions))
        assert_images_match(messages, expected_results(engine, header, acquisitions))


def test_uncertainty_property_sends_posterior_series_from_the_bundled_prior(listener, engine, cartesian,
                                                                           monkeypatch):
    """The real sampler and the bundled score prior behind the gadget: after each image, its posterior mean
    (next series) and standard-deviation map (the one after), saying what they are."""
    monkeypatch.setattr(engine.config, "uncertainty_budget_s", 8.0)
    header, acquisitions = cartesian
    first_slice = [acq for acq in acquisitions if acq.idx.slice == 0]
    messages = _exchange(listener, stream_bytes(config_text(uncertainty="2", series_index="3"), header, first_slice))
    assert messages[-1].id == MessageId.CLOSE and not [m for m in messages if m.id == MessageId.ERROR]
    images = {int(m.value.image_series_index): m.value for m in messages if m.id == MessageId.IMAGE}
    assert sorted(images) == [3, 4, 5]
    image, mean, std = (np.asarray(images[index].data, np.float64).squeeze() for index in (3, 4, 5))
    roles = [ismrmrd.Meta.deserialize(images[index].attribute_string)["DataRole"] for index in (3, 4, 5)]
    assert roles == ["Image", "PosteriorMean", "PosteriorStd"]
    comment = ismrmrd.Meta.deserialize(images[5].attribute_string)["ImageComments"]
    assert "uncertainty map (posterior SD)" in comment and "score prior demo-score" in comment
    assert np.isfinite(mean).all() and (std >= 0).all() and std.max() > 0
    assert np.corrcoef(image.ravel(), mean.ravel())[0, 1] > 0.8  # the mean shows the same anatomy
    assert std.mean() < 0.5 * mean.mean()


def test_a_bad_uncertainty_property_is_an_error_naming_it(listener, cartesian):
    header, acquisitions = cartesian
    messages = _exchange(listener, stream_bytes(config_text(uncertainty="65"), header, acquisitions[:4]))
    assert [m.id for m in messages] == [MessageId.ERROR, MessageId.CLOSE]
    assert "uncertainty" in messages[0].value
