"""One engine on the bundled demo artifacts for every in-process gadget test, and the simulated inputs."""

from __future__ import annotations

import pytest

from mrdserve.models.data.acquisitions import AcquisitionAssembler
from mrdserve.service.config import ServiceConfig
from mrdserve.service.engine.engine import Engine
from tests.gadgets.gadgetron_side import simulated


@pytest.fixture(scope="session")
def engine():
    engine = Engine(ServiceConfig(device="cpu"))
    engine.load()
    return engine


@pytest.fixture(scope="session")
def cartesian(tmp_path_factory):
    """2 slices, with a noise scan (the gadget's own ingest prewhitens)."""
    return simulated(tmp_path_factory.mktemp("cartesian"), "cartesian", 2)


@pytest.fixture(scope="session")
def cartesian_quiet(tmp_path_factory):
    """2 slices without a noise scan (as after Gadgetron's NoiseAdjust consumed it)."""
    return simulated(tmp_path_factory.mktemp("cartesian-quiet"), "cartesian", 2, noise_scan=False)


@pytest.fixture(scope="session")
def radial(tmp_path_factory):
    return simulated(tmp_path_factory.mktemp("radial"), "radial", 1)


def expected_results(engine, header, acquisitions, prewhiten=True):
    """What the engine makes of the same acquisitions through our ingest (the reference for the gadget)."""
    assembler = AcquisitionAssembler(header, prewhiten=prewhiten)
    samples = [s for acq in acquisitions for s in assembler.add(acq)] + assembler.finish(require_data=False)
    return engine.reconstruct_sync(samples)
