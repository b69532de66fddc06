"""deploy/docker-compose.yml (+ the GPU override): structure, mounts that exist, settings the service accepts.

`docker compose` is not available on the test machines, so the file is checked structurally here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from mrdserve.service.config import ServiceConfig
from tests.deploy.dockerfile import stages

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERVICE_KEYS = {"build", "image", "restart", "ports", "environment", "volumes", "read_only", "tmpfs", "user",
                "cap_drop", "security_opt", "depends_on", "command", "deploy", "healthcheck"}
PORT = re.compile(r"^(?:(?:\d{1,3}\.){3}\d{1,3}:)?\d{1,5}:\d{1,5}$")
IMAGE = re.compile(r"^[a-z0-9./_-]+:[A-Za-z0-9._-]+$")


def load(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def expand(value: str) -> str:
    """${VAR:-default} -> default (what compose does with the variable unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_services_are_complete_and_well_formed():
    compose = load()
    assert set(compose) <= {"name", "services", "volumes", "networks"}
    services = compose["services"]
    assert set(services) == {"mrdserve", "prometheus", "grafana", "orthanc"}
    for name, service in services.items():
        assert set(service) <= SERVICE_KEYS, (name, set(service) - SERVICE_KEYS)
        assert IMAGE.match(service["image"]), service["image"]  # every image pinned by tag, none :latest
        assert not service["image"].endswith(":latest")
        for port in service.get("ports", []):
            assert PORT.match(port), port
        for dependency in service.get("depends_on", []):
            assert dependency in services
        for volume in service.get("volumes", []):
            source = expand(volume).split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: mount source {source} missing"
            else:
                assert source in compose["volumes"], f"{name}: named volume {source} not declared"


def test_mrdserve_service_matches_the_image_and_its_settings_are_valid():
    mrdserve = load()["services"]["mrdserve"]
    assert mrdserve["build"]["target"] == "service" and mrdserve["build"]["dockerfile"] == "Dockerfile"
    assert (DEPLOY / mrdserve["build"]["context"] / "Dockerfile").is_file()
    assert {p.split(":")[-1] for p in mrdserve["ports"]} == {"8000", "9002"}
    assert mrdserve["read_only"] is True and "/tmp" in mrdserve["tmpfs"] and mrdserve["cap_drop"] == ["ALL"]
    assert mrdserve["user"].split(":")[0] == stages()["service"].all("USER")[-1].split(":")[0]
    env = {k: expand(str(v)) for k, v in mrdserve["environment"].items()}
    config = ServiceConfig.from_env_and_args(env=env)  # every MRDSERVE_* value is one the service accepts
    assert config.pacs_url == "http://orthanc:8042/dicom-web" and config.pacs_protocol == "dicomweb"
    mounts = {expand(v).split(":")[1]: expand(v).split(":")[0] for v in mrdserve["volumes"]}
    assert mounts["/models"] == "./artifacts" and str(config.spool_dir) in mounts
    assert [str(p) for p in config.artifacts][-1] == "/models"


def test_gpu_override_reserves_an_nvidia_gpu_and_builds_the_cuda_variant():
    override = load("docker-compose.gpu.yml")["services"]["mrdserve"]
    assert override["build"]["args"]["VARIANT"] == "gpu"
    device = override["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
    assert ServiceConfig.from_env_and_args(env=override["environment"]).device == "cuda"


def test_orthanc_receives_what_mrdserve_pushes():
    compose = load()
    orthanc = json.loads((DEPLOY / "orthanc" / "orthanc.json").read_text())
    env = compose["services"]["mrdserve"]["environment"]
    assert orthanc["DicomWeb"]["Enable"] is True and orthanc["DicomWeb"]["Root"] == "/dicom-web/"
    assert env["MRDSERVE_PACS_URL"] == f"http://orthanc:{orthanc['HttpPort']}{orthanc['DicomWeb']['Root'].rstrip('/')}"
    assert env["MRDSERVE_PACS_CALLED_AET"] == orthanc["DicomAet"]
    ports = compose["services"]["orthanc"]["ports"]
    assert any(p.endswith(f":{orthanc['HttpPort']}") for p in ports)
    assert any(p.endswith(f":{orthanc['DicomPort']}") for p in ports)
    assert "/etc/orthanc/orthanc.json" in compose["services"]["orthanc"]["volumes"][0]
