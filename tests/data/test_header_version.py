"""Headers we write carry the ISMRMRD 1.14 schema's XML version and scanner-like synthetic ids (what Gadgetron 4.7
needs to pass a header to an external gadget and to run NoiseAdjust); reading takes any version."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import h5py
import pytest

from mrdserve.models.data.ismrmrd_header import (
    XML_HEADER_VERSION,
    build_header,
    header_to_xml,
    parse_header,
    synthetic_identifiers,
)
from mrdserve.models.data.ismrmrd_io import read_ismrmrd
from mrdserve.models.data.simulate import simulate_to_file


def _generator() -> str | None:
    """ISMRMRD 1.14's own generator: under MRDSERVE_GADGETRON (the real Gadgetron's prefix), else /opt/gadgetron."""
    prefix = Path(os.environ.get("MRDSERVE_GADGETRON", "/opt/gadgetron"))
    tool = prefix / "bin" / "ismrmrd_generate_cartesian_shepp_logan"
    return str(tool) if tool.is_file() else None


def test_written_headers_carry_the_schema_version_and_synthetic_ids(tmp_path):
    path = tmp_path / "scan.h5"
    simulate_to_file(path, trajectory="cartesian", coils=2, acceleration=2, matrix=32)
    with h5py.File(path) as f:
        xml = f["dataset/xml"][0].decode()
    assert re.search(r"<version>(\d+)</version>", xml).group(1) == str(XML_HEADER_VERSION) == "14"
    header = parse_header(xml)
    ids = synthetic_identifiers(1)
    assert header.subjectInformation.patientID == ids.patient == "PHANTOM00001"
    assert header.studyInformation.studyID == ids.study
    assert header.measurementInformation.measurementID == "00000_PHANTOM00001_00000001_1"
    assert synthetic_identifiers(7).measurement == "00000_PHANTOM00007_00000007_7"


def test_reading_accepts_older_and_missing_versions(tmp_path):
    xml = header_to_xml(build_header((16, 16)))
    for replacement in ("<version>1</version>", ""):
        older = xml.replace(f"<version>{XML_HEADER_VERSION}</version>", replacement)
        assert parse_header(older).encoding[0].encodedSpace.matrixSize.x == 16


@pytest.mark.skipif(_generator() is None, reason="ISMRMRD 1.14's tools (../shared/gadgetron) not installed")
def test_the_version_is_the_one_ismrmrd_1_14_writes(tmp_path):
    tool = _generator()
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(tool).parents[1] / "lib")}
    subprocess.run([tool, "-m", "32", "-c", "2", "-o", str(tmp_path / "ref.h5")], check=True, capture_output=True,
                   cwd=tmp_path, env=env)
    with h5py.File(tmp_path / "ref.h5") as f:
        theirs = re.search(r"<version>(\d+)</version>", f["dataset/xml"][0].decode()).group(1)
    assert int(theirs) == XML_HEADER_VERSION
    assert read_ismrmrd(tmp_path / "ref.h5")[1]  # and we read what it writes
