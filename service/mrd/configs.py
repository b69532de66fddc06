"""Config names of the MRD server: what a client's CONFIG_FILE / CONFIG_TEXT selects.

Gadgetron clients send a chain file name (``default.xml``), python-ismrmrd-server clients a module name; both
pick the reconstruction. Ours:

- ``default`` (also ``auto``): the engine's plan chooses per slice from the header and data (artifact by its
  constraints, else the classical fallback with its reason);
- ``classical``: the classical baseline of the task, never a network; a classical method name (``rss``,
  ``adjoint``, ``cg-sense``, ``grappa``, ``l1-wavelet``) is ``classical`` with that method;
- a task name: ``cartesian`` (XPDNet-style artifacts, task ``cartesian2d-multicoil``), ``noncartesian``
  (NC-PDNet, ``noncartesian2d-multicoil`` and ``noncartesian3d``), or a task id itself: the first artifact of
  that task that fits each slice, else the classical fallback;
- an artifact name (``demo-xpdnet``) or label (``demo-xpdnet-0.12000``): that artifact for every slice.

A ``.xml`` suffix is ignored, names are case-insensitive. Anything else is an unknown config.
"""

from __future__ import annotations

from collections.abc import Sequence

from mrdserve.models.data.baseline import METHODS
from mrdserve.service.artifacts import Artifact
from mrdserve.service.engine.choice import AUTOMATIC_NAMES, CLASSICAL, Choice, ChoiceMode

AUTOMATIC_CONFIGS = tuple(name for name in AUTOMATIC_NAMES if name)  # default, auto
TASK_CONFIGS: dict[str, tuple[str, ...]] = {
    "cartesian": ("cartesian2d-multicoil",),
    "noncartesian": ("noncartesian2d-multicoil", "noncartesian3d"),
}


CLASSICAL_METHOD_CONFIGS = tuple(m for m in METHODS if m != "auto")


class UnknownConfigError(ValueError):
    """The client asked for a config this server does not have."""


def normalise(name: str) -> str:
    """A config name without surrounding blanks, NULs and a ``.xml`` suffix, lower case."""
    cleaned = name.strip("\x00 \t\r\n")
    if cleaned.lower().endswith(".xml"):
        cleaned = cleaned[:-4]
    return cleaned.lower()


def known_configs(artifacts: Sequence[Artifact]) -> list[str]:
    """Every name ``resolve`` accepts, for error messages and ``--help``."""
    tasks = sorted({a.manifest.task for a in artifacts})
    return [*AUTOMATIC_CONFIGS, CLASSICAL, *CLASSICAL_METHOD_CONFIGS, *TASK_CONFIGS, *tasks,
            *sorted({a.name for a in artifacts}),
            *sorted(a.label for a in artifacts)]


def resolve(name: str, artifacts: Sequence[Artifact]) -> Choice:
    """The engine's choice a config name stands for; UnknownConfigError (listing the known names) otherwise."""
    key = normalise(name)
    if key in AUTOMATIC_CONFIGS:
        return Choice(name=key)
    if key == CLASSICAL:
        return Choice(ChoiceMode.classical, name=key)
    if key in CLASSICAL_METHOD_CONFIGS:
        return Choice(ChoiceMode.classical, method=key, name=key)
    if key in TASK_CONFIGS:
        return Choice(ChoiceMode.task, tasks=TASK_CONFIGS[key], name=key)
    if key in {a.manifest.task for a in artifacts}:
        return Choice(ChoiceMode.task, tasks=(key,), name=key)
    named = [a for a in artifacts if key in (a.name.lower(), a.label.lower())]
    if named:
        return Choice(ChoiceMode.artifact, artifact=named[-1].label, name=key)
    shown = name.strip("\x00 \t\r\n")[:200]
    raise UnknownConfigError(f"unknown config {shown!r}; known configs: {', '.join(known_configs(artifacts))}")
