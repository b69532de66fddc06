"""The artifact manifest: its JSON schema, validation, and sha256 verification of an artifact directory.

An artifact is a directory ``<name>-<version>/`` holding ``manifest.json``, ``model.ts`` (TorchScript) and
``model.onnx``. The exporter writes the manifest; the service registry reads it. This module lives in the
data layer (no torch) so that both can import it while the service never imports ``models.export``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILES = ("model.ts", "model.onnx")
# The one list of task and preparation names (training config, models.data.prepare and the service use these).
TASKS = ("cartesian2d-multicoil", "cartesian2d-singlecoil", "noncartesian2d-multicoil",
         "noncartesian2d-singlecoil", "noncartesian3d")
PREPARATIONS = ("cartesian-sense", "noncartesian-toeplitz")
TRAJECTORIES = ("cartesian", "radial", "spiral", "stack-of-stars", "radial3d", "other")

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_METRICS = {
    "type": "object",
    "required": ["psnr", "ssim", "nmse"],
    "properties": {"psnr": _NUMBER_OR_NULL, "ssim": _NUMBER_OR_NULL, "nmse": _NUMBER_OR_NULL},
}
_RANGE_INT = {
    "type": "object",
    "required": ["min", "max"],
    "additionalProperties": False,
    "properties": {"min": {"type": "integer", "minimum": 1}, "max": {"type": "integer", "minimum": 1}},
}
_RANGE_NUMBER = {
    "type": "object",
    "required": ["min", "max"],
    "additionalProperties": False,
    "properties": {"min": {"type": "number", "minimum": 1}, "max": {"type": "number", "minimum": 1}},
}
_TENSOR = {
    "type": "object",
    "required": ["name", "dtype", "shape"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "dtype": {"enum": ["float32", "float64", "float16", "int64", "int32", "bool"]},
        "shape": {"type": "array", "items": {"oneOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        ]}},
        "description": {"type": "string"},
    },
}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://mrdserve.example/schemas/artifact-manifest-1.json",
    "title": "mrdserve artifact manifest",
    "type": "object",
    "required": ["schema_version", "name", "version", "network", "task", "preparation", "inputs", "outputs",
                 "constraints", "training", "validation", "equivalence", "files", "frameworks", "intended_use",
                 "opset"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]*$"},
        "version": {"type": "string", "pattern": "^[0-9A-Za-z][0-9A-Za-z.+_-]*$"},
        "network": {
            "type": "object",
            "required": ["name", "kwargs", "parameters"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "kwargs": {"type": "object"},
                "parameters": {"type": "integer", "minimum": 0},
            },
        },
        "task": {"enum": list(TASKS)},
        "preparation": {
            "type": "object",
            "required": ["name", "params"],
            "additionalProperties": False,
            "properties": {"name": {"enum": list(PREPARATIONS)}, "params": {"type": "object"}},
        },
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
        "outputs": {"type": "array", "minItems": 1, "items": _TENSOR},
        "constraints": {
            "type": "object",
            "required": ["trajectory", "coils", "matrix", "acceleration", "dims"],
            "additionalProperties": False,
            "properties": {
                "trajectory": {"type": "array", "minItems": 1, "items": {"enum": list(TRAJECTORIES)}},
                "coils": _RANGE_INT,
                "matrix": _RANGE_INT,
                "acceleration": _RANGE_NUMBER,
                "dims": {"enum": [2, 3]},
            },
        },
        "training": {
            "type": "object",
            "required": ["config", "steps", "seed", "git_commit", "data", "created"],
            "additionalProperties": False,
            "properties": {
                "config": {"type": "object"},
                "steps": {"type": "integer", "minimum": 0},
                "seed": {"type": ["integer", "null"]},
                "git_commit": {"type": ["string", "null"]},
                "data": {
                    "type": "object",
                    "required": ["kind", "description", "version"],
                    "properties": {"kind": {"type": "string"}, "description": {"type": "string"},
                                   "version": {"type": "string"}},
                },
                "created": {"type": ["string", "null"]},
            },
        },
        "validation": {
            "type": "object",
            "required": ["model", "baselines"],
            "additionalProperties": False,
            "properties": {
                "model": {"anyOf": [_METRICS, {"type": "object", "maxProperties": 0}]},
                "baselines": {"type": "object", "additionalProperties": _METRICS},
                "envelope": {
                    "type": "object",
                    "required": ["reference", "rule", "axes", "cells"],
                    "properties": {
                        "axes": {"type": "object", "required": ["matrix", "coils", "acceleration", "noise"]},
                        "cells": {"type": "array", "items": {
                            "type": "object",
                            "required": ["matrix", "coils", "acceleration", "noise", "psnr", "ssim", "classical",
                                         "serve"],
                            "properties": {"serve": {"type": "boolean"}}}},
                    },
                },
            },
        },
        "equivalence": {
            "type": "object",
            "required": ["torchscript_max_rel", "onnx_max_rel", "tolerance", "sample"],
            "properties": {
                "torchscript_max_rel": {"type": "number", "minimum": 0},
                "onnx_max_rel": {"type": "number", "minimum": 0},
                "tolerance": {"type": "number", "exclusiveMinimum": 0},
                "sample": {"type": "object"},
                "torchscript_method": {"enum": ["script", "trace"]},
                "notes": {"type": "array", "items": {"type": "string"}},
            },
        },
        "files": {
            "type": "object",
            "required": list(MODEL_FILES),
            "additionalProperties": _SHA256,
            "properties": {name: _SHA256 for name in MODEL_FILES},
        },
        "frameworks": {
            "type": "object",
            "required": ["torch", "onnx", "onnxruntime", "python"],
            "additionalProperties": {"type": "string"},
        },
        "intended_use": {"type": "string", "minLength": 1},
        "opset": {"type": "integer", "minimum": 18},
    },
}


def _json_path(path: Any) -> str:
    """``$.a.b[0]`` from a jsonschema error path (a deque of keys and indices)."""
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Raise ValueError naming the JSON path of the first schema violation of ``manifest`` (if any)."""
    import jsonschema

    if not isinstance(manifest, dict):
        raise ValueError(f"manifest must be a JSON object, got {type(manifest).__name__}")
    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if errors:
        error = errors[0]
        raise ValueError(f"invalid manifest at {_json_path(error.absolute_path)}: {error.message}")
    for key in ("coils", "matrix", "acceleration"):
        bounds = manifest["constraints"][key]
        if bounds["min"] > bounds["max"]:
            raise ValueError(f"invalid manifest at $.constraints.{key}: min {bounds['min']} > max {bounds['max']}")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``, read in chunks (model files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest_json(directory: str | Path) -> dict[str, Any]:
    """The JSON object in ``directory/manifest.json`` of any artifact kind, unvalidated (ValueError naming the file
    when it is missing, not JSON or not an object)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ValueError(f"{path}: manifest.json not found")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: the manifest must be a JSON object")
    return manifest


def check_files(directory: str | Path, files: dict[str, str]) -> None:
    """Every file ``files`` names (name -> sha256) is in ``directory`` and hashes as recorded (ValueError naming
    the file otherwise), so a modified artifact of any kind is refused."""
    directory = Path(directory)
    for name, expected in files.items():
        path = directory / name
        if Path(name).name != name:
            raise ValueError(f"{name}: file names in the manifest must not contain directories")
        if not path.is_file():
            raise ValueError(f"{name}: file missing from artifact {directory}")
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(f"{name}: sha256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...)")


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and validate ``directory/manifest.json`` (ValueError naming the file when missing or invalid)."""
    path = Path(directory) / MANIFEST_FILE
    manifest = read_manifest_json(directory)
    try:
        validate_manifest(manifest)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return manifest


def verify_artifact(directory: str | Path) -> dict[str, Any]:
    """Load and validate the manifest of the artifact in ``directory`` and check every file's sha256.

    Returns the manifest. Raises ValueError naming the file for a missing file or a hash mismatch, so the
    registry refuses an artifact that is not exactly what was exported.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory}: artifact directory not found")
    manifest = load_manifest(directory)
    check_files(directory, manifest["files"])
    return manifest
