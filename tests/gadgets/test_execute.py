"""The ``<execute>`` form end to end: the test plays Gadgetron (listens, starts the real
``python -m gadgetron <port> gadgets.reconstruct reconstruct`` launcher, sends CONFIG, HEADER, acquisitions and
CLOSE) and checks the images and the final CLOSE; failures come back as ERROR (id 8) then CLOSE, and the process
exits. Our own launcher (``python -m mrdserve.gadgets connect``) is checked the same way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ismrmrd
import pytest

from mrdserve.service.mrd.protocol import MessageId
from tests.gadgets.checks import assert_images_match
from tests.gadgets.conftest import expected_results
from tests.gadgets.gadgetron_side import TIMEOUT_S, GadgetronPort, collect, config_text, stream_bytes

ROOT = Path(__file__).resolve().parents[2]


def _run_gadget(command: list[str], payload: bytes):
    """Start ``python -m <command>`` ("PORT" replaced by our port), stream ``payload``; return the messages,
    the exit code and stderr."""
    port = GadgetronPort()
    env = {**os.environ, "MRDSERVE_DEVICE": "cpu", "GADGETRON_EXTERNAL_LOG_LEVEL": "INFO",
           "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", *(str(port.port) if part == "PORT" else part for part in command)]
    process = subprocess.Popen(argv, cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        sock = port.accept()
        with sock:
            messages = collect(sock, payload)
        _, stderr = process.communicate(timeout=TIMEOUT_S)
    finally:
        port.close()
        if process.poll() is None:
            process.kill()
            process.communicate()
    return messages, process.returncode, stderr.decode(errors="replace")


GADGETRON = ["gadgetron", "PORT", "mrdserve.gadgets.reconstruct", "reconstruct"]


@pytest.mark.parametrize("case", ["cartesian", "radial"])
def test_gadgetron_launcher_returns_the_engines_images(case, request, engine):
    header, acquisitions = request.getfixturevalue(case)
    messages, code, stderr = _run_gadget(GADGETRON, stream_bytes(config_text(), header, acquisitions))
    results = expected_results(engine, header, acquisitions)
    assert len(results) == (2 if case == "cartesian" else 1)
    assert_images_match(messages, results)
    assert code == 0, stderr


def test_gadgetron_launcher_reports_an_unusable_artifact_with_error_then_close(cartesian):
    header, acquisitions = cartesian
    payload = stream_bytes(config_text(artifact="no-such-artifact"), header, acquisitions)
    messages, code, stderr = _run_gadget(GADGETRON, payload)
    assert [m.id for m in messages] == [MessageId.ERROR, MessageId.CLOSE]
    assert "no-such-artifact" in messages[0].value
    assert code == 0, stderr  # the launcher ends normally once ERROR and CLOSE are out


def test_our_launcher_reports_a_corrupted_acquisition_and_exits(cartesian):
    header, acquisitions = cartesian
    at = next(i for i, acq in enumerate(acquisitions) if not acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)) + 3
    broken = ismrmrd.Acquisition(acquisitions[at].getHead(), acquisitions[at].data, acquisitions[at].traj)
    broken.center_sample = 1000  # does not fit the encoded readout
    payload = stream_bytes(config_text(), header, [*acquisitions[:at], broken, *acquisitions[at + 1:]])
    messages, code, _ = _run_gadget(["mrdserve.gadgets", "connect", "PORT"], payload)
    assert [m.id for m in messages] == [MessageId.ERROR, MessageId.CLOSE]
    assert "center_sample 1000" in messages[0].value
    assert code == 1
