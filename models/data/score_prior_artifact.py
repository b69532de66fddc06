"""Loading an exported score prior (``<name>-<version>/`` with ``model.ts``, ``model.onnx``, ``manifest.json``).

The runtime samples posteriors with ``models.physics.posterior_sampling`` and needs the prior's score as a
callable; this module gives it one without importing any network code (only ``torch.jit.load`` and ``json``),
after checking that every file is exactly what was exported (the manifest's sha256). The artifact is written by
``models.export.score_prior.export_score_prior``; its manifest holds ``"kind": "score-prior"``, the sampler
settings it was validated with (``SamplerSettings.from_dict(manifest["sampler_settings"])``) and the intensity
convention of its training images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mrdserve.models.data.manifest_schema import MANIFEST_FILE, check_files, read_manifest_json

MANIFEST = MANIFEST_FILE
KIND = "score-prior"
REQUIRED = ("name", "version", "kind", "files", "sampler_settings", "intensity")


def read_score_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of the score prior in ``directory``, with its files' hashes checked (ValueError otherwise)."""
    directory = Path(directory)
    path = directory / MANIFEST
    manifest = read_manifest_json(directory)
    missing = [key for key in REQUIRED if key not in manifest]
    if missing:
        raise ValueError(f"{path}: manifest field(s) {', '.join(missing)} missing")
    if manifest["kind"] != KIND:
        raise ValueError(f"{path}: kind is {manifest['kind']!r}, not {KIND!r} (a reconstruction artifact?)")
    files = manifest["files"]
    if not isinstance(files, dict) or "model.ts" not in files:
        raise ValueError(f"{path}: manifest 'files' must map file names (model.ts at least) to sha256")
    check_files(directory, files)
    return manifest


def load_score_prior(directory: str | Path, device: torch.device | str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(score callable ``(x [B, 2, y, x], sigma [B]) -> [B, 2, y, x]`` on ``device``, manifest) of a score prior.

    The callable is the TorchScript module in eval mode; hashes are checked first, so a modified artifact is
    refused (ValueError naming the file).
    """
    manifest = read_score_manifest(directory)
    module = torch.jit.load(str(Path(directory) / "model.ts"), map_location=torch.device(device))
    return module.eval(), manifest
