"""The Siemens OpenRecon label (service.openrecon): the metadata validates against the field list, holds at most
14 UI parameters drawn from the engine's choices, survives base64, and the Dockerfile it writes carries it (and
passes hadolint). The parameters' round trip through a stream is in test_mrd_server.py."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mrdserve.models.data.baseline import METHODS
from mrdserve.service.artifacts import load_artifacts
from mrdserve.service.cli import main
from mrdserve.service.openrecon import (
    LABEL_NAME,
    MAX_PARAMETERS,
    check_label,
    dockerfile_stage,
    encode_label,
    label_document,
)


@pytest.fixture(scope="module")
def document():
    return label_document(load_artifacts())


def test_the_metadata_describes_a_raw_in_image_out_research_server(document):
    check_label(document)
    reconstruction = document["reconstruction"]
    assert reconstruction["transfer_protocol"]["protocol"] == "ISMRMRD" and reconstruction["port"] == 9002
    assert (reconstruction["emitter"], reconstruction["injector"]) == ("raw", "image")
    assert reconstruction["content_qualification_type"] == "RESEARCH" and not reconstruction["can_use_gpu"]
    assert document["general"]["version"] == "0.1.0" and document["general"]["id"] == "mrdserve"
    assert "Not for clinical use" in document["general"]["regulatory_information"]["safety_advices"]
    gpu = label_document([], gpu=True)["reconstruction"]
    assert gpu["can_use_gpu"] and gpu["min_count_required_gpus"] == 1


def test_the_ui_parameters_are_the_engines_choices(document):
    parameters = {p["id"]: p for p in document["parameters"]}
    assert len(parameters) <= MAX_PARAMETERS
    artifacts = [value["id"] for value in parameters["artifact"]["values"]]
    assert artifacts[:2] == ["auto", "classical"] and {"demo-xpdnet", "demo-ncpdnet-radial"} <= set(artifacts)
    assert [value["id"] for value in parameters["method"]["values"]] == list(METHODS)
    assert parameters["dtype"]["default"] == "float32" and parameters["series_index"]["type"] == "int"
    assert parameters["uncertainty"]["type"] == "int" and parameters["uncertainty"]["default"] == 0


@pytest.mark.parametrize(("edit", "named"), [
    (lambda d: d["reconstruction"].update(emitter="kspace"), "reconstruction/emitter"),
    (lambda d: d["general"].update(version="1.0"), "general/version"),
    (lambda d: d["general"]["regulatory_information"].pop("udi"), "general/regulatory_information"),
    (lambda d: d["parameters"].extend([d["parameters"][-1]] * MAX_PARAMETERS), "parameters"),
    (lambda d: d["parameters"][0].pop("values"), "parameters/0"),
    (lambda d: d["parameters"].append(dict(d["parameters"][0])), "ids must be unique"),
])
def test_a_broken_document_is_refused_naming_the_field(document, edit, named):
    broken = copy.deepcopy(document)
    edit(broken)
    with pytest.raises(ValueError, match="OpenRecon metadata") as refused:
        check_label(broken)
    assert named in str(refused.value)


def test_the_label_round_trips_and_the_dockerfile_carries_it(document, tmp_path):
    label = encode_label(document)
    assert json.loads(base64.b64decode(label)) == document
    dockerfile = dockerfile_stage(label, "mrdserve:cpu")
    assert f'LABEL "{LABEL_NAME}"="{label}"' in dockerfile and dockerfile.startswith("# OpenRecon")
    hadolint = Path(sys.executable).parent / "hadolint"
    if hadolint.is_file() or shutil.which("hadolint"):
        path = tmp_path / "Dockerfile"
        path.write_text(dockerfile)
        checked = subprocess.run([str(hadolint if hadolint.is_file() else "hadolint"), str(path)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_command_writes_the_three_files(tmp_path, capsys):
    assert main(["openrecon", "-o", str(tmp_path), "--base", "mrdserve:cpu"]) == 0
    written = json.loads((tmp_path / "openrecon.json").read_text())
    check_label(written)
    label = (tmp_path / "openrecon-label.b64").read_text().strip()
    assert json.loads(base64.b64decode(label)) == written
    assert "FROM mrdserve:cpu AS openrecon" in (tmp_path / "Dockerfile.openrecon").read_text()
    assert "5 UI parameters" in capsys.readouterr().out
