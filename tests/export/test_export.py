from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mrdserve.models.data.manifest_schema import verify_artifact
from mrdserve.models.data.prepare import collate
from mrdserve.models.export.cli import add_export_arguments, run_export
from mrdserve.models.export.export import _prepared, export_checkpoint, load_checkpoint
from mrdserve.models.nets.registry import build_network

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "xpdnet": ({"n_iter": 1, "n_primal": 2, "preset": "small"}, "cartesian2d-multicoil",
               {"name": "cartesian-sense", "params": {"sensitivities": "acs"}}),
    "ncpdnet": ({"n_iter": 2, "n_primal": 2, "n_filters": 4, "multicoil": True}, "noncartesian2d-multicoil",
                {"name": "noncartesian-toeplitz", "params": {}}),
}


def write_checkpoint(path: Path, network: str) -> Path:
    """A contract-format checkpoint of a tiny randomly initialised network (no trainer involved)."""
    kwargs, task, preparation = TINY[network]
    torch.manual_seed(0)
    model = build_network(network, **kwargs)
    torch.save({
        "format": "mrdserve-checkpoint/1", "network": {"name": network, "kwargs": kwargs}, "task": task,
        "preparation": preparation, "model_state": model.state_dict(), "optimizer_state": None,
        "scheduler_state": None, "scaler_state": None, "step": 7,
        "config": {"name": f"tiny-{network}", "data": {"kind": "synthetic",
                                                      "generator": {"shape": [32, 32], "n_coils": 3}}},
        "seed": 0, "data": {"kind": "synthetic", "description": "tiny phantoms", "version": "1"},
        "metrics": {"model": {"psnr": 30.0, "ssim": 0.9, "nmse": 0.01},
                    "baselines": {"cg-sense": {"psnr": 28.0, "ssim": 0.8, "nmse": 0.02}}},
        "rng": {}, "git_commit": None, "created": "2025-01-01T00:00:00+00:00",
    }, path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both tiny networks exported once: {network: (checkpoint path, artifact dir)}."""
    root = tmp_path_factory.mktemp("export")
    result = {}
    for network in TINY:
        checkpoint = write_checkpoint(root / f"{network}.pt", network)
        artifact = export_checkpoint(checkpoint, root / "artifacts", dynamic_spatial=True)
        result[network] = (checkpoint, artifact)
    return result


@pytest.mark.parametrize("network", list(TINY))
def test_artifact_has_valid_manifest_hashes_and_equivalence_figures(exported, network):
    _, artifact = exported[network]
    assert artifact.name == f"tiny-{network}-0.7"
    assert sorted(p.name for p in artifact.iterdir()) == ["manifest.json", "model.onnx", "model.ts"]
    manifest = verify_artifact(artifact)
    assert manifest["network"]["name"] == network and manifest["task"] == TINY[network][1]
    assert manifest["preparation"]["name"] == TINY[network][2]["name"]
    assert manifest["equivalence"]["onnx_max_rel"] < 1e-4 and manifest["equivalence"]["torchscript_max_rel"] < 1e-4
    assert manifest["equivalence"]["sample"]["batches"] == [1, 3]
    assert manifest["inputs"][0]["shape"][0] == "B" and manifest["outputs"][0]["name"] == "image"
    assert manifest["training"]["steps"] == 7 and manifest["validation"]["baselines"]["cg-sense"]["psnr"] == 28.0
    assert "synthetic" in manifest["intended_use"] and "NOT for clinical" in manifest["intended_use"]
    assert manifest["opset"] >= 18 and manifest["constraints"]["trajectory"]
    assert not list(artifact.parent.glob(".*")), "staging directory left behind"


_STANDALONE = """
import importlib.abc, json, sys, torch
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mrdserve.models.nets" or name.startswith("mrdserve.models.nets."):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from mrdserve.models.export.verify import load_and_run
figures = {}
for artifact, data in json.loads(sys.argv[1]).items():
    saved = torch.load(data)
    outputs = load_and_run(artifact, saved["inputs"])
    want = saved["expected"]
    figures[artifact] = [float(((torch.from_numpy(outputs[k]) - want).norm() / want.norm()).item())
                         for k in ("torchscript", "onnx")]
assert not any(m.startswith("mrdserve.models.nets") for m in sys.modules)
print(json.dumps(figures))
"""


def test_artifacts_run_without_the_network_classes_and_reproduce_eager(exported, tmp_path):
    jobs = {}
    for network, (checkpoint_path, artifact) in exported.items():
        checkpoint = load_checkpoint(checkpoint_path)
        model = build_network(network, **checkpoint["network"]["kwargs"])
        model.load_state_dict(checkpoint["model_state"])
        model.eval()
        prepared = _prepared(checkpoint, None)
        inputs = collate(prepared[1:])  # batch of 2 real prepared samples
        with torch.no_grad():
            expected = model(*inputs.values())
        torch.save({"inputs": inputs, "expected": expected}, tmp_path / f"{network}.pt")
        jobs[str(artifact)] = str(tmp_path / f"{network}.pt")
    result = subprocess.run([sys.executable, "-c", _STANDALONE, json.dumps(jobs)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(figures) == 2
    for errors in figures.values():
        assert max(errors) < 1e-4


def test_tampered_artifact_fails_verification(exported, tmp_path):
    import shutil

    copy = shutil.copytree(exported["ncpdnet"][1], tmp_path / "copy")
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.onnx: sha256 mismatch \(manifest [0-9a-f]+\.\.\., file"):
        verify_artifact(copy)


def test_export_refuses_outputs_beyond_tolerance_and_leaves_nothing(exported, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"differs from eager .*relative error .*> tolerance 1\.0e-12; no artifact"):
        export_checkpoint(exported["ncpdnet"][0], out, tolerance=1e-12, dynamic_spatial=False)
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_refuses_an_existing_artifact_and_bad_opset(exported, capsys):
    checkpoint, artifact = exported["ncpdnet"]
    parser = add_export_arguments(argparse.ArgumentParser())
    assert run_export(parser.parse_args([str(checkpoint), "-o", str(artifact.parent)])) == 1
    assert "already exists" in capsys.readouterr().err
    assert run_export(parser.parse_args([str(checkpoint), "-o", str(artifact.parent), "--opset", "17"])) == 1
    assert "opset must be >= 18" in capsys.readouterr().err


def test_bad_checkpoint_is_rejected(tmp_path):
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a mrdserve-checkpoint/1 checkpoint"):
        export_checkpoint(tmp_path / "x.pt", tmp_path / "out")
