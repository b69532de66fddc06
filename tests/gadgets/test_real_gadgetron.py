"""Our gadget inside a real Gadgetron 4.7.2 (``../shared/gadgetron``), end to end with its own client.

Every chain XML in ``gadgets/config/`` (raw and buffered, ``<execute>`` and ``<connect>``) on Cartesian, radial and
spiral files from ``mrdserve simulate`` and on a file from ISMRMRD 1.14's own generator, with and without a noise
scan, two slices: the images equal what ``mrdserve recon`` makes of the same file (exactly for raw chains, after a
scale fit where Gadgetron's NoiseAdjust rescales). Failures reach the client as Gadgetron's error, the server
keeps serving, and Gadgetron closing during the gadget's handshake leaves no launcher behind. Skipped, saying why,
without a Gadgetron (``MRDSERVE_GADGETRON`` = its prefix, or ``gadgetron`` on PATH).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

from mrdserve.gadgets.gadgetron_host import GadgetronServer, free_port, gadgetron_prefix
from mrdserve.gadgets.settings import GadgetSettings
from mrdserve.models.data.ismrmrd_io import read_ismrmrd
from mrdserve.models.data.metrics import scale_fit
from mrdserve.models.data.simulate import simulate_to_file
from mrdserve.service.offline_recon import offline_engine

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT.parent / "shared" / "gadgetron" / "storage_standin.py"  # Gadgetron's storage server, stood in
CONFIGS = ROOT / "gadgets" / "config"
PREFIX = gadgetron_prefix()
pytestmark = [
    pytest.mark.skipif(PREFIX is None, reason="no Gadgetron: set MRDSERVE_GADGETRON to its prefix "
                                              "(bash ../shared/gadgetron/install.sh installs one in /opt/gadgetron)"),
    pytest.mark.skipif(not STANDIN.is_file(), reason=f"the storage stand-in {STANDIN} is missing"),
]
RAW_TOLERANCE = 1e-4  # relative to the peak: batched and single inference of the same artifact
BUFFERED_TOLERANCE = 1e-3  # after the scale fit: Gadgetron's NoiseAdjust and RemoveROOversampling ran instead


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    assert PREFIX is not None
    running = GadgetronServer(PREFIX, tmp_path_factory.mktemp("gadgetron"), STANDIN)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def listener(server, tmp_path_factory):
    """Our ``python -m mrdserve.gadgets listen`` for the ``<connect>`` chains, and their XMLs pointing at it."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "mrdserve.gadgets", "listen", "--port", str(port),
                                "--log-level", "WARNING"], cwd=ROOT, env={**os.environ, "MRDSERVE_DEVICE": "cpu"},
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert process.stdout is not None
        assert "listening" in process.stdout.readline().decode()  # ready: it prints this once bound
        folder = tmp_path_factory.mktemp("connect-configs")
        for xml in CONFIGS.glob("*_connect.xml"):
            connect = re.sub(r'<connect port="\d+"', f'<connect port="{port}"', xml.read_text())
            (folder / xml.name).write_text(connect)
        yield folder
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    made = {}
    for name, trajectory, extra in (("cartesian", "cartesian", []), ("radial", "radial", []),
                                    ("spiral", "spiral", []), ("cartesian-quiet", "cartesian", ["--no-noise-scan"])):
        path = folder / f"{name}.h5"
        from mrdserve.service.cli import main

        assert main(["simulate", str(path), "--trajectory", trajectory, "--coils", "4", "--acceleration", "4",
                     "--matrix", "96", "--slices", "2", "--seed", "11", *extra]) == 0
        made[name] = path
    generator = PREFIX / "bin" / "ismrmrd_generate_cartesian_shepp_logan" if PREFIX else None
    if generator is not None and generator.is_file():
        path = folder / "shepp-logan.h5"
        subprocess.run([str(generator), "-m", "96", "-c", "8", "-a", "2", "-w", "24", "-n", "0.01", "-C",
                        "-o", str(path)], check=True, capture_output=True, cwd=folder,
                       env={**os.environ, "LD_LIBRARY_PATH": str(PREFIX / "lib")})
        made["shepp-logan"] = path
    from tests.scanner_like import fully_sampled_without_flags

    made["fully-sampled"] = fully_sampled_without_flags(folder / "fully-sampled.h5")
    return made


@pytest.fixture(scope="module")
def engine():
    return offline_engine()


def _expected(engine, path: Path, config: Path) -> list[np.ndarray]:
    """What ``mrdserve recon`` makes of ``path`` with the chain's settings (its artifact property)."""
    external = ElementTree.parse(config).getroot().find("stream/external/configuration")
    settings = GadgetSettings.from_config_text(ElementTree.tostring(external, encoding="unicode"))
    return [result.image for result in engine.reconstruct_sync(read_ismrmrd(path)[1], settings.choice)]


def _check(run, expected: list[np.ndarray], tolerance: float, fitted: bool) -> None:
    assert not run.errors, run.output
    assert len(run.images) == len(expected), run.output
    for image, reference in zip(run.images, expected, strict=True):
        got = np.asarray(image.data, dtype=np.float32).squeeze()
        assert got.shape == reference.shape
        if fitted:
            got = scale_fit(reference, got)
        error = float(np.abs(got - reference).max() / np.abs(reference).max())
        assert error <= tolerance, f"max error {error:.2e} relative to the peak"


CHAINS = [  # (chain XML, input file, scale-fitted comparison)
    ("mrdserve_xpdnet.xml", "cartesian", False),
    ("mrdserve_xpdnet.xml", "shepp-logan", False),
    ("mrdserve_ncpdnet.xml", "radial", False),
    ("mrdserve_ncpdnet.xml", "spiral", False),
    ("mrdserve_xpdnet.xml", "fully-sampled", False),  # named artifact on a fully sampled scan without ACS flags
    ("mrdserve_ncpdnet.xml", "fully-sampled", False),  # automatic choice (this chain names no artifact)
    ("mrdserve_xpdnet_buffered.xml", "cartesian", True),
    ("mrdserve_xpdnet_buffered.xml", "cartesian-quiet", True),
    ("mrdserve_ncpdnet_buffered.xml", "radial", True),
]


@pytest.mark.parametrize(("chain", "data", "fitted"), CHAINS, ids=[f"{c}-{d}" for c, d, _ in CHAINS])
def test_execute_chains_give_what_recon_gives(server, files, engine, chain, data, fitted):
    if data not in files:
        pytest.skip("ISMRMRD 1.14's generator is not in the Gadgetron prefix")
    run = server.run(files[data], CONFIGS / chain)
    _check(run, _expected(engine, files[data], CONFIGS / chain), BUFFERED_TOLERANCE if fitted else RAW_TOLERANCE,
           fitted)


CONNECT_CHAINS = [("mrdserve_xpdnet_connect.xml", "cartesian", False),
                  ("mrdserve_ncpdnet_connect.xml", "radial", False),
                  ("mrdserve_xpdnet_buffered_connect.xml", "cartesian", True),
                  ("mrdserve_ncpdnet_buffered_connect.xml", "spiral", True)]


@pytest.mark.parametrize(("chain", "data", "fitted"), CONNECT_CHAINS, ids=[c for c, _, _ in CONNECT_CHAINS])
def test_connect_chains_give_what_recon_gives(server, listener, files, engine, chain, data, fitted):
    config = listener / chain
    run = server.run(files[data], config)
    _check(run, _expected(engine, files[data], config), BUFFERED_TOLERANCE if fitted else RAW_TOLERANCE, fitted)


def test_every_chain_xml_is_exercised():
    tested = {chain for chain, _, _ in CHAINS + CONNECT_CHAINS}
    assert tested == {path.name for path in CONFIGS.glob("*.xml")}


def test_a_failing_reconstruction_reaches_the_client_and_the_server_carries_on(server, files, tmp_path):
    small = tmp_path / "small.h5"
    simulate_to_file(small, trajectory="cartesian", coils=4, acceleration=4, matrix=64, seed=5)
    failed = server.run(small, CONFIGS / "mrdserve_xpdnet.xml")  # the chain names an artifact trained for >= 75
    assert "mrdserve gadget" in failed.errors and "does not fit this data" in failed.errors
    assert not failed.images
    fine = server.run(files["radial"], CONFIGS / "mrdserve_ncpdnet.xml")
    assert not fine.errors and len(fine.images) == 2


def test_gadgetron_closing_during_the_handshake_leaves_no_launcher(server, files):
    """A dependency query (config, then CLOSE before any header) makes Gadgetron end the ``<execute>`` gadget's
    connection during its handshake; the guarded launcher exits instead of spinning, so the client is answered."""
    run = server.run(files["cartesian"], CONFIGS / "mrdserve_xpdnet.xml", query=True, timeout_s=60)
    assert "timed out" not in run.output  # the client was answered (it hangs without the guard)
    deadline = time.monotonic() + 10
    while server.launchers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not server.launchers(), "a python -m gadgetron launcher is still running"
