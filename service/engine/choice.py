"""What a request asks to reconstruct its samples with: the one choice policy every entry point hands the planner.

REST (``artifact``/``method`` query), the MRD server (config name and JSON parameters), the gadget (properties)
and ``mrdserve recon`` (``--artifact``/``--method``) each turn their request into a ``Choice``; the planner
(``service.engine.plan``) alone turns a choice and a sample into the artifact or the classical method.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from mrdserve.models.data.baseline import check_method

CLASSICAL = "classical"  # the artifact name that asks for the classical reconstruction
AUTOMATIC_NAMES = ("", "default", "auto")  # artifact names that mean "choose from the header and data"


class ChoiceMode(StrEnum):
    """How the artifact is chosen: automatically, never (classical), among the artifacts of tasks, or by name."""

    automatic = "automatic"
    classical = "classical"
    task = "task"
    artifact = "artifact"


@dataclass(frozen=True)
class Choice:
    """A request's choice: ``artifact`` (name or label) for mode artifact, ``tasks`` for mode task; ``method`` is
    the classical method wherever the classical path is used; ``name`` is the config name it came from, if any."""

    mode: ChoiceMode = ChoiceMode.automatic
    artifact: str | None = None
    tasks: tuple[str, ...] = ()
    method: str = "auto"
    name: str | None = None

    def __post_init__(self) -> None:
        check_method(self.method)
        if (self.mode is ChoiceMode.artifact) != (self.artifact is not None):
            raise ValueError("a choice names an artifact exactly when its mode is 'artifact'")
        if (self.mode is ChoiceMode.task) != bool(self.tasks):
            raise ValueError("a choice names tasks exactly when its mode is 'task'")

    @classmethod
    def of(cls, artifact: str | None = None, method: str = "auto") -> Choice:
        """The choice of a request that names an artifact (or ``classical``, or nothing) and a classical method."""
        key = (artifact or "").strip()
        if key.lower() in AUTOMATIC_NAMES:
            return cls(method=method)
        if key.lower() == CLASSICAL:
            return cls(ChoiceMode.classical, method=method)
        return cls(ChoiceMode.artifact, artifact=key, method=method)

    def with_method(self, method: str) -> Choice:
        """This choice with ``method``, unless it already names one (a method-named config wins)."""
        return self if self.method != "auto" else replace(self, method=method)

    def describe(self) -> str:
        """One line for the client (MRD TEXT): what reconstructs the slices."""
        prefix = f"config {self.name!r}: " if self.name is not None else ""
        if self.mode is ChoiceMode.artifact:
            return f"{prefix}artifact {self.artifact}"
        if self.mode is ChoiceMode.task:
            return f"{prefix}first fitting artifact of task {', '.join(self.tasks)}"
        if self.mode is ChoiceMode.classical:
            return f"{prefix}classical reconstruction ({self.method})"
        return f"{prefix}automatic choice from the header and data"


AUTOMATIC = Choice()
