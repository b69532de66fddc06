"""The container entrypoint outside Docker: the image's MRDSERVE_* settings on free loopback ports, /readyz, stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.deploy.dockerfile import ROOT, stages
from tests.deploy.orthanc import free_port

ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent


def image_environment(tmp_path: Path) -> dict[str, str]:
    """The service stage's ENV, with paths moved under ``tmp_path`` and loopback ports (as a test can run it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MRDSERVE_")}
    for line in stages()["service"].all("ENV"):
        for pair in line.split():
            key, _, value = pair.partition("=")
            if key.startswith("MRDSERVE_"):
                env[key] = value
    models = tmp_path / "models"
    models.mkdir()
    env.update(MRDSERVE_HOST="127.0.0.1", MRDSERVE_PORT=str(free_port()), MRDSERVE_MRD_PORT=str(free_port()),
               MRDSERVE_ARTIFACTS=str(models), MRDSERVE_SPOOL_DIR=str(tmp_path / "spool"), MRDSERVE_DEVICE="cpu",
               MRDSERVE_LOG_LEVEL="WARNING", PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def healthcheck_command() -> list[str]:
    text = stages()["service"].all("HEALTHCHECK")[-1]
    return json.loads(text[text.index("CMD") + 3:].strip())


def test_entrypoint_serves_with_the_image_settings(tmp_path):
    env = image_environment(tmp_path)
    base = f"http://127.0.0.1:{env['MRDSERVE_PORT']}"
    process = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        status = 0
        while time.monotonic() < deadline and process.poll() is None:
            status, body = get(f"{base}/readyz")
            if status == 200:
                break
            time.sleep(0.25)
        assert process.poll() is None, process.stdout.read().decode(errors="replace")[-3000:]
        assert status == 200, f"/readyz answered {status}"
        assert json.loads(body)["status"] == "ready"
        models = json.loads(get(f"{base}/v1/models")[1])["models"]
        assert {m["name"] for m in models} >= {"demo-xpdnet"}  # MRDSERVE_WITH_BUNDLED=1 keeps the bundled ones
        metrics = get(f"{base}/metrics")[1].decode()
        assert "mrdserve_inflight_requests 0.0" in metrics and "mrdserve_pacs_push_total" in metrics
        command = healthcheck_command()
        command[0] = str(VENV_BIN / command[0])
        assert subprocess.run(command, env=env, timeout=30).returncode == 0  # the image's HEALTHCHECK, for real
        assert (tmp_path / "spool").is_dir()
    finally:
        process.send_signal(signal.SIGTERM)  # exec'd: the signal reaches mrdserve itself and it shuts down cleanly
        try:
            assert process.wait(timeout=40) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()


def test_healthcheck_fails_when_nothing_listens(tmp_path):
    env = image_environment(tmp_path)
    command = healthcheck_command()
    command[0] = str(VENV_BIN / command[0])
    assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode != 0


def test_missing_artifact_mount_is_refused_with_a_clear_message(tmp_path):
    env = image_environment(tmp_path)
    env["MRDSERVE_ARTIFACTS"] = f"{tmp_path / 'models'}:{tmp_path / 'not-mounted'}"
    run = subprocess.run(["sh", str(ENTRYPOINT), "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 64
    assert "not-mounted" in run.stderr and "MRDSERVE_ARTIFACTS" in run.stderr


def test_spool_that_cannot_be_created_is_refused(tmp_path):
    env = image_environment(tmp_path)
    (tmp_path / "a-file").write_text("not a directory")  # fails for root too, unlike a chmod
    env["MRDSERVE_SPOOL_DIR"] = str(tmp_path / "a-file" / "spool")
    run = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 64 and "MRDSERVE_SPOOL_DIR" in run.stderr and "writable volume" in run.stderr


def test_other_commands_pass_through(tmp_path):
    env = image_environment(tmp_path)
    run = subprocess.run(["sh", str(ENTRYPOINT), "echo", "hello"], env=env, capture_output=True, text=True,
                         timeout=30)
    assert (run.returncode, run.stdout) == (0, "hello\n")
    assert shutil.which("mrdserve", path=env["PATH"]) is not None
