from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest

from mrdserve.models.data.manifest_schema import sha256_file, validate_manifest, verify_artifact


def valid_manifest(files: dict[str, str] | None = None, name: str = "demo", version: str = "1.0") -> dict:
    """A minimal manifest that satisfies the schema (hashes given or dummy)."""
    files = files or {"model.ts": "0" * 64, "model.onnx": "1" * 64}
    metrics = {"psnr": 30.0, "ssim": 0.9, "nmse": 0.01}
    return {
        "schema_version": 1, "name": name, "version": version,
        "network": {"name": "xpdnet", "kwargs": {"n_iter": 1}, "parameters": 10},
        "task": "cartesian2d-multicoil",
        "preparation": {"name": "cartesian-sense", "params": {"sensitivities": "espirit"}},
        "inputs": [{"name": "kspace", "dtype": "float32", "shape": ["B", "C", "ky", "kx", 2]}],
        "outputs": [{"name": "image", "dtype": "float32", "shape": ["B", "y", "x"]}],
        "constraints": {"trajectory": ["cartesian"], "coils": {"min": 2, "max": 64},
                        "matrix": {"min": 16, "max": 512}, "acceleration": {"min": 1, "max": 8}, "dims": 2},
        "training": {"config": {}, "steps": 5, "seed": 0, "git_commit": None,
                     "data": {"kind": "synthetic", "description": "phantoms", "version": "1"},
                     "created": "2025-01-01T00:00:00Z"},
        "validation": {"model": metrics, "baselines": {"cg-sense": metrics}},
        "equivalence": {"torchscript_max_rel": 0.0, "onnx_max_rel": 1e-7, "tolerance": 1e-4, "sample": {}},
        "files": files,
        "frameworks": {"torch": "2", "onnx": "1", "onnxruntime": "1", "python": "3.11"},
        "intended_use": "demo on synthetic data; not for clinical use",
        "opset": 18,
    }


def write_artifact(directory: Path, contents: dict[str, bytes] | None = None, **kwargs) -> Path:
    """An artifact directory with the given file contents and a manifest holding their hashes."""
    import json

    contents = contents or {"model.ts": b"torchscript bytes", "model.onnx": b"onnx bytes"}
    directory.mkdir(parents=True)
    for name, data in contents.items():
        (directory / name).write_bytes(data)
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    (directory / "manifest.json").write_text(json.dumps(valid_manifest(hashes, **kwargs)))
    return directory


def test_valid_manifest_passes():
    validate_manifest(valid_manifest())


@pytest.mark.parametrize("field", ["task", "files", "intended_use", "opset", "preparation"])
def test_missing_field_is_named(field):
    manifest = valid_manifest()
    del manifest[field]
    with pytest.raises(ValueError, match=f"'{field}' is a required property"):
        validate_manifest(manifest)


def test_nested_problem_names_its_json_path():
    manifest = valid_manifest()
    del manifest["training"]["data"]["kind"]
    with pytest.raises(ValueError, match=r"\$\.training\.data: 'kind' is a required property"):
        validate_manifest(manifest)
    manifest = valid_manifest()
    manifest["inputs"][0]["shape"][1] = "bad name!"
    with pytest.raises(ValueError, match=r"\$\.inputs\[0\]\.shape\[1\]"):
        validate_manifest(manifest)


@pytest.mark.parametrize(("change", "where"), [
    (lambda m: m.update(opset=17), r"\$\.opset"),
    (lambda m: m.update(task="cartesian5d"), r"\$\.task"),
    (lambda m: m["files"].update({"model.onnx": "xyz"}), r"\$\.files\.model\.onnx"),
    (lambda m: m.update(extra=1), r"\$: Additional properties"),
    (lambda m: m["constraints"]["coils"].update(min=9, max=2), r"\$\.constraints\.coils: min 9 > max 2"),
])
def test_bad_values_are_rejected_with_their_path(change, where):
    manifest = copy.deepcopy(valid_manifest())
    change(manifest)
    with pytest.raises(ValueError, match=where):
        validate_manifest(manifest)


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_verify_artifact_accepts_intact_and_names_tampered_or_missing_files(tmp_path):
    artifact = write_artifact(tmp_path / "demo-1.0")
    assert verify_artifact(artifact)["name"] == "demo"
    (artifact / "model.onnx").write_bytes(b"onnx bytez")
    with pytest.raises(ValueError, match=r"model\.onnx: sha256 mismatch \(manifest [0-9a-f]{12}\.\.\., file "
                                         r"[0-9a-f]{12}\.\.\.\)"):
        verify_artifact(artifact)
    (artifact / "model.onnx").unlink()
    with pytest.raises(ValueError, match=r"model\.onnx: file missing"):
        verify_artifact(artifact)


def test_verify_artifact_reports_a_missing_or_broken_manifest(tmp_path):
    with pytest.raises(ValueError, match="artifact directory not found"):
        verify_artifact(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"manifest\.json not found"):
        verify_artifact(tmp_path / "empty")
    (tmp_path / "empty" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        verify_artifact(tmp_path / "empty")
