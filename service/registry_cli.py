"""`mrdserve models [--json] [--artifacts DIR ...]`: the artifacts the registry would load, hashes checked.

Uses only the data-layer manifest module (the runtime never imports network, training or export code).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mrdserve.models.data.manifest_schema import MANIFEST_FILE, verify_artifact
from mrdserve.service.artifacts import BUNDLED_ARTIFACTS, artifact_directories


def add_models_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mrdserve models``."""
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    parser.add_argument("--artifacts", action="append", default=None, metavar="DIR",
                        help="directory of artifact directories, or one artifact directory (repeatable; "
                             "default: the bundled service/artifacts/)")
    return parser


def describe(directory: Path) -> dict[str, Any]:
    """One listing entry: identity from the manifest and whether its hashes (and schema) check out."""
    entry: dict[str, Any] = {"path": str(directory), "name": None, "version": None, "task": None,
                             "network": None, "sha256_ok": False, "reason": None}
    try:
        raw = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        if isinstance(raw, dict):
            entry.update({k: raw.get(k) for k in ("name", "version", "task")})
            network = raw.get("network")
            entry["network"] = network.get("name") if isinstance(network, dict) else None
    except (OSError, ValueError):
        pass
    try:
        verify_artifact(directory)
        entry["sha256_ok"] = True
    except ValueError as exc:
        entry["reason"] = str(exc)
    return entry


def run_models(args: argparse.Namespace) -> int:
    """List the artifacts (table or ``--json`` array); 0 even when some fail (they are reported, not hidden)."""
    roots = [Path(p) for p in args.artifacts] if args.artifacts else [BUNDLED_ARTIFACTS]
    entries = [describe(d) for d in artifact_directories(roots)]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print(f"no artifacts found in {', '.join(map(str, roots))}")
        return 0
    columns = ("name", "version", "task", "network", "sha256")
    rows = [(str(e["name"]), str(e["version"]), str(e["task"]), str(e["network"]),
             "ok" if e["sha256_ok"] else f"FAILED: {e['reason']}") for e in entries]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in (columns, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
