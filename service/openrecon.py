"""Siemens OpenRecon packaging: the image label that describes mrdserve's MRD server to the scanner.

OpenRecon runs an MRD server (port 9002) in a container whose image carries the label
``com.siemens-healthineers.magneticresonance.openrecon.metadata:1.1.0``: base64 of a JSON document with a
``general`` part (name, id, version, vendor, regulatory information), a ``reconstruction`` part (protocol
ISMRMRD, port, what the scanner emits to the server and what it injects back, resource minima, content
qualification) and at most 14 UI ``parameters`` (boolean, choice, integer, double or string, each with an id, a
label and a default). The scanner sends the chosen values as JSON with the stream; ``service.mrd.session`` takes
them (``parse_parameters``: ``artifact``, ``method``, ``dtype``, ``series_index``, ``uncertainty``).
``OPENRECON_SCHEMA`` writes down the field list from the public OpenRecon examples; ``mrdserve openrecon -o DIR``
writes the document, the label and a Dockerfile stage that carries it.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Sequence
from datetime import date
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import jsonschema

from mrdserve.models.data.baseline import METHODS
from mrdserve.service.artifacts import Artifact, load_artifacts
from mrdserve.service.engine.choice import CLASSICAL
from mrdserve.service.outputs.ismrmrd_images import IMAGE_DTYPES

LABEL_NAME = "com.siemens-healthineers.magneticresonance.openrecon.metadata:1.1.0"
MAX_PARAMETERS = 14
MRD_PORT = 9002
_TEXT = {"type": "object", "required": ["en"], "properties": {"en": {"type": "string", "minLength": 1}}}
_REGULATORY = ("device_trade_name", "production_identifier", "manufacturer_address", "made_in", "manufacture_date",
               "material_number", "gtin", "udi", "safety_advices", "special_operating_instructions",
               "additional_relevant_information")
_PARAMETER = {
    "type": "object", "required": ["id", "label", "type", "default"],
    "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]*$"}, "label": _TEXT, "information": _TEXT,
        "type": {"enum": ["boolean", "choice", "int", "double", "string"]},
        "values": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["id", "name"],
            "properties": {"id": {"type": "string"}, "name": _TEXT}}},
    },
    "allOf": [{"if": {"properties": {"type": {"const": "choice"}}}, "then": {"required": ["values"]}}],
}
OPENRECON_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["general", "reconstruction", "parameters"],
    "properties": {
        "general": {
            "type": "object", "required": ["name", "version", "vendor", "information", "id", "regulatory_information"],
            "properties": {
                "name": _TEXT, "information": _TEXT, "vendor": {"type": "string", "minLength": 1},
                "version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
                "id": {"type": "string", "pattern": "^[A-Za-z0-9]+$"},
                "regulatory_information": {"type": "object", "required": list(_REGULATORY),
                                           "properties": {key: {"type": "string"} for key in _REGULATORY}},
            },
        },
        "reconstruction": {
            "type": "object",
            "required": ["transfer_protocol", "port", "emitter", "injector", "can_process_adjustment_data",
                         "can_use_gpu", "min_count_required_gpus", "min_required_gpu_memory", "min_required_memory",
                         "min_count_required_cpu_cores", "content_qualification_type"],
            "properties": {
                "transfer_protocol": {"type": "object", "required": ["protocol", "version"],
                                      "properties": {"protocol": {"const": "ISMRMRD"},
                                                     "version": {"type": "string"}}},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "emitter": {"enum": ["raw", "image"]},
                "injector": {"enum": ["image", "compleximage", "raw"]},
                "can_process_adjustment_data": {"type": "boolean"}, "can_use_gpu": {"type": "boolean"},
                **{key: {"type": "integer", "minimum": 0} for key in (
                    "min_count_required_gpus", "min_required_gpu_memory", "min_required_memory",
                    "min_count_required_cpu_cores")},
                "content_qualification_type": {"enum": ["RESEARCH", "PRODUCT"]},
            },
        },
        "parameters": {"type": "array", "maxItems": MAX_PARAMETERS, "items": _PARAMETER},
    },
}


def _text(value: str) -> dict[str, str]:
    return {"en": value}


def _choice(parameter_id: str, label: str, information: str, values: Sequence[str], default: str) -> dict:
    return {"id": parameter_id, "label": _text(label), "type": "choice", "information": _text(information),
            "values": [{"id": value, "name": _text(value)} for value in values], "default": default}


def ui_parameters(artifacts: Sequence[Artifact]) -> list[dict[str, Any]]:
    """The UI parameters, from the engine's choices: artifact, classical method, output type, series index,
    uncertainty samples."""
    names = ["auto", CLASSICAL, *sorted({a.name for a in artifacts})]
    return [
        _choice("artifact", "Reconstruction", "auto: the learned model validated for the data, else the best "
                "classical method; classical: never a network; or one model by name", names, "auto"),
        _choice("method", "Classical method", "used wherever the classical path runs (auto: chosen from the data)",
                METHODS, "auto"),
        _choice("dtype", "Image data type", "float32 keeps the data units; uint16 stores them with a slope",
                IMAGE_DTYPES, "float32"),
        {"id": "series_index", "label": _text("Series index"), "type": "int",
         "information": _text("image_series_index of the returned images"), "default": 1},
        {"id": "uncertainty", "label": _text("Uncertainty samples"), "type": "int",
         "information": _text("posterior samples per slice for a posterior-mean and a standard-deviation series "
                              "(next two series indices; minutes per slice; research use); 0: none"), "default": 0},
    ]


def label_document(artifacts: Sequence[Artifact], *, gpu: bool = False, memory_mb: int = 8192,
                   cpu_cores: int = 2) -> dict[str, Any]:
    """The OpenRecon metadata of this mrdserve: raw data in, magnitude images out, research use."""
    version = ".".join([*package_version("mrdserve").split("."), "0", "0"][:3])
    document = {
        "general": {
            "name": _text("mrdserve"), "version": version, "vendor": "mrdserve", "id": "mrdserve",
            "information": _text("Online reconstruction with learned unrolled networks (XPDNet, NC-PDNet) where "
                                 "validated, else the best classical method. Research use only."),
            "regulatory_information": {
                "device_trade_name": "mrdserve", "production_identifier": version,
                "manufacturer_address": "open source (Apache-2.0)", "made_in": "n/a",
                "manufacture_date": date.today().strftime("%Y/%m/%d"),
                "material_number": f"mrdserve_{version.replace('.', '_')}", "gtin": "", "udi": "",
                "safety_advices": "Not for clinical use.", "special_operating_instructions": "",
                "additional_relevant_information": ""},
        },
        "reconstruction": {
            "transfer_protocol": {"protocol": "ISMRMRD", "version": "1.4.1"}, "port": MRD_PORT,
            "emitter": "raw", "injector": "image", "can_process_adjustment_data": False, "can_use_gpu": gpu,
            "min_count_required_gpus": 1 if gpu else 0, "min_required_gpu_memory": 8192 if gpu else 0,
            "min_required_memory": memory_mb, "min_count_required_cpu_cores": cpu_cores,
            "content_qualification_type": "RESEARCH",
        },
        "parameters": ui_parameters(artifacts),
    }
    check_label(document)
    return document


def check_label(document: dict[str, Any]) -> None:
    """ValueError naming the first field that breaks ``OPENRECON_SCHEMA`` (or the unique-id rule)."""
    try:
        jsonschema.validate(document, OPENRECON_SCHEMA)
    except jsonschema.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "(document)"
        raise ValueError(f"OpenRecon metadata {where}: {error.message}") from None
    ids = [parameter["id"] for parameter in document["parameters"]]
    if len(ids) != len(set(ids)):
        raise ValueError(f"OpenRecon metadata parameters: ids must be unique, got {ids}")


def encode_label(document: dict[str, Any]) -> str:
    """The label's value: base64 of the JSON document."""
    return base64.b64encode(json.dumps(document, indent=2).encode()).decode()


def dockerfile_stage(label: str, base: str = "mrdserve:gpu") -> str:
    """A Dockerfile over the service image (``base``) that carries the label and serves MRD on 9002."""
    return (f"# OpenRecon: the service image, labelled for the scanner (written by `mrdserve openrecon`)\n"
            f"FROM {base} AS openrecon\n"
            f'LABEL "{LABEL_NAME}"="{label}"\n'
            f'CMD ["serve", "--mrd-port", "{MRD_PORT}"]\n')


def add_openrecon_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for openrecon.json, "
                        "openrecon-label.b64 and Dockerfile.openrecon")
    parser.add_argument("--artifacts", action="append", type=Path, default=None, metavar="DIR",
                        help="artifact directory the image will serve (repeatable; default: the bundled ones)")
    parser.add_argument("--gpu", action="store_true", help="declare that the reconstruction uses a GPU")
    parser.add_argument("--base", default="mrdserve:gpu",
                        help="the service image to label (default: mrdserve:gpu, as `make docker` builds it)")


def run_openrecon(args: argparse.Namespace) -> int:
    try:
        document = label_document(load_artifacts(args.artifacts), gpu=args.gpu)
    except ValueError as error:
        print(f"mrdserve openrecon: {error}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    label = encode_label(document)
    (args.output / "openrecon.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.output / "openrecon-label.b64").write_text(label + "\n")
    (args.output / "Dockerfile.openrecon").write_text(dockerfile_stage(label, args.base))
    print(f"wrote OpenRecon metadata ({len(document['parameters'])} UI parameters) and a Dockerfile stage "
          f"into {args.output}")
    return 0
