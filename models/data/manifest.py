"""An artifact's manifest as frozen, typed values, parsed once from the schema-checked ``manifest.json``.

The service reads what it chooses and prepares with from here (task, constraints, preparation, network, the
validation envelope) instead of indexing the JSON document; ``document`` keeps the whole document for what is
passed through as it is (the ``/v1/models`` listing, the envelope's cells). Torch-free, like ``manifest_schema``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """A closed range an artifact accepts (coils, matrix, acceleration)."""

    min: float
    max: float

    def contains(self, value: float, tolerance: float = 1e-6) -> bool:
        return self.min <= value <= self.max + tolerance

    def clamp(self, value: float) -> float:
        return min(max(value, self.min), self.max)


@dataclass(frozen=True)
class Constraints:
    """The data an artifact accepts: trajectories, and coils, matrix and acceleration ranges."""

    trajectory: tuple[str, ...]
    coils: Bounds
    matrix: Bounds
    acceleration: Bounds

    def bounds(self, key: str) -> Bounds:
        return {"coils": self.coils, "matrix": self.matrix, "acceleration": self.acceleration}[key]


@dataclass(frozen=True)
class Preparation:
    """The preparation the network was trained with (``models.data.prepare``) and its parameters."""

    name: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Manifest:
    """What the service uses of a manifest; ``document`` is the whole (schema-checked) JSON document."""

    name: str
    version: str
    task: str
    network: str
    preparation: Preparation
    constraints: Constraints
    intended_use: str
    trained_matrix: tuple[int, ...] | None  # the matrix of the export's equivalence sample, if recorded
    document: Mapping[str, Any]

    @property
    def validation(self) -> Mapping[str, Any]:
        return self.document.get("validation", {})

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Manifest:
        """Parse a manifest that ``manifest_schema.verify_artifact`` accepted."""
        constraints = document["constraints"]
        sample = document.get("equivalence", {}).get("sample", {})
        return cls(
            name=str(document["name"]), version=str(document["version"]), task=str(document["task"]),
            network=str(document["network"]["name"]),
            preparation=Preparation(str(document["preparation"]["name"]), dict(document["preparation"]["params"])),
            constraints=Constraints(
                trajectory=tuple(constraints["trajectory"]),
                **{key: Bounds(constraints[key]["min"], constraints[key]["max"])
                   for key in ("coils", "matrix", "acceleration")}),
            intended_use=str(document.get("intended_use", "")),
            trained_matrix=tuple(int(n) for n in sample["matrix"]) if sample.get("matrix") else None,
            document=document)
