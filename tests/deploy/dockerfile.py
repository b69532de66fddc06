"""A small Dockerfile reader for the tests: instructions (continuations joined, comments dropped) per stage."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for word, arguments in self.instructions if word == keyword]


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) in order; backslash continuations joined, comment lines dropped."""
    joined, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        joined.append(current + stripped)
        current = ""
    result = []
    for text in joined:
        word, _, arguments = text.partition(" ")
        result.append((word.upper(), arguments.strip()))
    return result


def stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    found: dict[str, Stage] = {}
    current = None
    for word, arguments in instructions(path):
        if word == "FROM":
            match = re.match(r"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", arguments, re.IGNORECASE)
            assert match, arguments
            current = Stage(match[2] or f"stage{len(found)}", match[1])
            found[current.name] = current
        elif current is not None:
            current.instructions.append((word, arguments))
    return found


def lineage(name: str, all_stages: dict[str, Stage], variant: str = "gpu") -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first (``base-${VARIANT}`` resolved to ``variant``)."""
    chain = []
    while name in all_stages:
        stage = all_stages[name]
        chain.append(stage)
        name = stage.base.replace("${VARIANT}", variant)
    return chain
