from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mrdserve.service.registry_cli import add_models_arguments, run_models
from tests.export.test_manifest import write_artifact

ROOT = Path(__file__).resolve().parents[2]


def _run(capsys, *argv: str) -> tuple[int, str]:
    args = add_models_arguments(argparse.ArgumentParser()).parse_args(list(argv))
    code = run_models(args)
    return code, capsys.readouterr().out


def test_json_lists_artifacts_with_sha256_status(tmp_path, capsys):
    write_artifact(tmp_path / "good-1.0", name="good", version="1.0")
    bad = write_artifact(tmp_path / "bad-2.0", name="bad", version="2.0")
    (bad / "model.ts").write_bytes(b"tampered")
    code, out = _run(capsys, "--json", "--artifacts", str(tmp_path))
    assert code == 0
    entries = {e["name"]: e for e in json.loads(out)}
    assert set(entries) == {"good", "bad"}
    assert entries["good"]["sha256_ok"] is True and entries["good"]["reason"] is None
    assert entries["good"]["version"] == "1.0" and entries["good"]["task"] == "cartesian2d-multicoil"
    assert entries["good"]["network"] == "xpdnet"
    assert entries["bad"]["sha256_ok"] is False and "model.ts: sha256 mismatch" in entries["bad"]["reason"]


def test_repeatable_artifacts_and_a_single_artifact_directory(tmp_path, capsys):
    one = write_artifact(tmp_path / "a" / "one-1", name="one", version="1")
    write_artifact(tmp_path / "b" / "two-1", name="two", version="1")
    code, out = _run(capsys, "--json", "--artifacts", str(one), "--artifacts", str(tmp_path / "b"))
    assert code == 0 and [e["name"] for e in json.loads(out)] == ["one", "two"]


def test_table_and_empty_listing(tmp_path, capsys):
    write_artifact(tmp_path / "demo-1.0")
    code, out = _run(capsys, "--artifacts", str(tmp_path))
    assert code == 0 and "demo" in out and "ok" in out.splitlines()[1]
    code, out = _run(capsys, "--json", "--artifacts", str(tmp_path / "missing"))
    assert code == 0 and json.loads(out) == []


def test_service_listing_imports_no_network_training_or_export_code():
    code = ("import sys, mrdserve.service.registry_cli; "
            "heavy = tuple('mrdserve.models.' + p for p in ('nets', 'training', 'export')) + ('torch',); "
            "bad = [m for m in sys.modules if m.startswith(heavy)]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
