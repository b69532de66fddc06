"""The gadget's settings, read from the ``<configuration>`` that Gadgetron sends as CONFIG (id 2).

In a chain: ``<external><execute .../><configuration><property name="artifact" value="demo-xpdnet"/>
</configuration></external>`` (the legacy ``<property><name>..</name><value>..</value></property>`` form works
too). Unset properties fall back to ``MRDSERVE_*`` environment variables for ``artifacts`` and ``device``, then to
the defaults (bundled demo artifacts, automatic artifact choice from the header). Unknown names are an error.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, fields
from typing import Any

from mrdserve.models.data.baseline import METHODS
from mrdserve.service.config import ServiceConfig
from mrdserve.service.engine.choice import Choice
from mrdserve.service.outputs.ismrmrd_images import IMAGE_DTYPES
from mrdserve.service.posterior import check_uncertainty

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class GadgetSettings:
    """``artifact``: artifact name or label, empty for the automatic choice from the header (classical fallback
    when none fits); ``artifacts``: artifact directories, ``:``-separated; ``device``: auto, cpu, cuda[:N];
    ``read_timeout_s``: longest wait for the next message; ``image_dtype``: float32 or uint16;
    ``series_index``: image_series_index of the returned images; ``prewhiten``: use noise scans found in a raw
    acquisition stream (set false when Gadgetron's NoiseAdjust ran before; ReconData is never prewhitened);
    ``method``: the classical method wherever the classical path is used (auto, rss, cg-sense, grappa,
    l1-wavelet, ...); ``uncertainty``: posterior samples per slice for uncertainty maps (a posterior-mean and a
    standard-deviation series after each image, ``series_index`` + 1 and + 2; 0: none)."""

    artifact: str = ""
    artifacts: str = ""
    device: str = ""
    read_timeout_s: float | None = None  # None: the connection's (300 s unless the launcher says otherwise)
    image_dtype: str = "float32"
    series_index: int = 1
    prewhiten: bool = True
    method: str = "auto"
    uncertainty: int = 0

    def __post_init__(self) -> None:
        check_uncertainty(self.uncertainty, "gadget property uncertainty")
        if self.method not in METHODS:
            raise ValueError(f"gadget property method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.read_timeout_s is not None and not self.read_timeout_s > 0:
            raise ValueError(f"gadget property read_timeout_s must be positive, got {self.read_timeout_s}")
        if self.image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"gadget property image_dtype must be one of {', '.join(IMAGE_DTYPES)}, got "
                             f"{self.image_dtype!r}")
        if not 0 <= self.series_index <= 65535 - (2 if self.uncertainty else 0):
            raise ValueError(f"gadget property series_index must be in 0..{65535 - (2 if self.uncertainty else 0)} "
                             f"(uint16{'; uncertainty maps take the next two' if self.uncertainty else ''}), got "
                             f"{self.series_index}")

    @property
    def choice(self) -> Choice:
        """What reconstructs the stream's slices: ``artifact`` (empty, ``auto`` or ``default``: chosen from the
        header) and ``method``, as the engine's ``Choice``."""
        return Choice.of(self.artifact, self.method)

    def service_config(self) -> ServiceConfig:
        """Engine configuration: these properties over ``MRDSERVE_*`` variables over the defaults."""
        given: dict[str, Any] = {"artifacts": self.artifacts or None, "device": self.device or None}
        return ServiceConfig.from_env_and_args(given)

    @classmethod
    def from_properties(cls, properties: dict[str, str]) -> GadgetSettings:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(properties) - set(known))
        if unknown:
            raise ValueError(f"unknown gadget propert{'y' if len(unknown) == 1 else 'ies'} "
                             f"{', '.join(unknown)}; known: {', '.join(known)}")
        values: dict[str, Any] = {}
        for name, text in properties.items():
            kind = known[name].type
            try:
                if kind in ("float", "float | None"):
                    values[name] = float(text)
                elif kind == "int":
                    values[name] = int(text)
                elif kind == "bool":
                    if text.strip().lower() not in _TRUE + _FALSE:
                        raise ValueError("expected true or false")
                    values[name] = text.strip().lower() in _TRUE
                else:
                    values[name] = text
            except ValueError as error:
                raise ValueError(f"gadget property {name}: {error} (got {text!r})") from None
        return cls(**values)

    @classmethod
    def from_config_text(cls, text: str) -> GadgetSettings:
        """Settings from Gadgetron's CONFIG payload; an empty document (no ``<configuration>``) gives defaults."""
        text = (text or "").strip("\x00 \t\r\n")
        if not text or "<configuration" not in text:
            return cls()
        try:
            root = ElementTree.fromstring(text)
        except ElementTree.ParseError as error:
            raise ValueError(f"gadget configuration is not XML: {error}") from None
        properties: dict[str, str] = {}
        for node in root.iter("property"):
            name = node.get("name") if node.get("name") is not None else node.findtext("name")
            value = node.get("value") if node.get("value") is not None else node.findtext("value")
            if not name:
                raise ValueError("gadget configuration has a <property> without a name")
            properties[name.strip()] = (value or "").strip()
        return cls.from_properties(properties)
