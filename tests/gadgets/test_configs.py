"""The chain XMLs in gadgets/config: they parse, use Gadgetron's own gadget classes, and name a module, target
and properties that exist (execute form) or a port (connect form)."""

from __future__ import annotations

import importlib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from mrdserve.gadgets.settings import GadgetSettings

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "gadgets" / "config").glob("*.xml"))
GADGETRON_GADGETS = {"NoiseAdjustGadget", "RemoveROOversamplingGadget", "AcquisitionAccumulateTriggerGadget",
                     "BucketToBufferGadget"}


def test_every_variant_is_there():
    names = {path.name for path in CONFIGS}
    for net in ("xpdnet", "ncpdnet"):
        for buffered in ("", "_buffered"):
            for form in ("", "_connect"):
                assert f"mrdserve_{net}{buffered}{form}.xml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_a_valid_chain(path):
    root = ElementTree.parse(path).getroot()
    assert root.tag == "configuration" and root.findtext("version") == "2"
    stream = root.find("stream")
    gadgets = [g.findtext("classname") for g in stream.findall("gadget")]
    assert set(gadgets) <= GADGETRON_GADGETS
    assert all(g.findtext("dll") == "gadgetron_mricore" for g in stream.findall("gadget"))
    if "_buffered" in path.name:
        assert gadgets[-2:] == ["AcquisitionAccumulateTriggerGadget", "BucketToBufferGadget"]
        assert gadgets[0] == "NoiseAdjustGadget"
    else:
        assert gadgets == []
    [external] = stream.findall("external")
    assert list(stream)[-1] is external
    execute, connect = external.find("execute"), external.find("connect")
    if path.name.endswith("_connect.xml"):
        assert execute is None and 0 < int(connect.get("port")) < 65536
    else:
        assert connect is None and execute.get("type") == "python"
        module = importlib.import_module(execute.get("name"))
        assert callable(getattr(module, execute.get("target")))
    configuration = external.find("configuration")
    properties = {p.get("name"): p.get("value") for p in configuration.findall("property")}
    settings = GadgetSettings.from_properties(properties)
    assert settings.choice.artifact == ("demo-xpdnet" if "xpdnet" in path.name else None)
    assert settings == GadgetSettings.from_config_text(ElementTree.tostring(configuration, encoding="unicode"))
