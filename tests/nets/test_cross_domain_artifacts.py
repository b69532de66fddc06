"""Tiny Cascade-net and KIKI-net served as artifacts of task cartesian2d-multicoil: exported by the exporter
(TorchScript + ONNX + manifest) from a contract checkpoint, run as the runtime runs them, equal to eager."""

from __future__ import annotations

import pytest
import torch

from mrdserve.models.data.manifest_schema import verify_artifact
from mrdserve.models.data.prepare import collate
from mrdserve.models.export.export import _prepared, export_checkpoint, load_checkpoint
from mrdserve.models.export.verify import load_and_run
from mrdserve.models.nets.registry import build_network
from tests.export import test_export

PREPARATION = {"name": "cartesian-sense", "params": {"sensitivities": "acs"}}
TINY = {
    "cascadenet": ({"n_cascades": 2, "n_layers": 2, "n_filters": 8, "dc_lambda": 4.0, "learn_lambda": True},
                   "cartesian2d-multicoil", PREPARATION),
    "kikinet": ({"n_iter": 1, "n_layers": 2, "n_filters": 8}, "cartesian2d-multicoil", PREPARATION),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both tiny networks exported once: {network: (checkpoint path, artifact dir)}."""
    root = tmp_path_factory.mktemp("cross_domain_export")
    result = {}
    with pytest.MonkeyPatch.context() as patch:
        for network, entry in TINY.items():
            patch.setitem(test_export.TINY, network, entry)  # reuse the export tests' checkpoint writer
            checkpoint = test_export.write_checkpoint(root / f"{network}.pt", network)
            result[network] = (checkpoint, export_checkpoint(checkpoint, root / "artifacts"))
    return result


@pytest.mark.parametrize("network", list(TINY))
def test_artifact_manifest_names_the_network_task_and_equivalence(exported, network):
    _, artifact = exported[network]
    assert sorted(p.name for p in artifact.iterdir()) == ["manifest.json", "model.onnx", "model.ts"]
    manifest = verify_artifact(artifact)
    assert manifest["network"]["name"] == network and manifest["task"] == "cartesian2d-multicoil"
    assert manifest["preparation"]["name"] == "cartesian-sense"
    assert [spec["name"] for spec in manifest["inputs"]] == ["kspace", "mask", "smaps"]
    assert manifest["equivalence"]["torchscript_method"] == "script"
    assert manifest["equivalence"]["onnx_max_rel"] < 1e-4 and manifest["equivalence"]["torchscript_max_rel"] < 1e-4
    assert manifest["constraints"]["coils"]["max"] > 1


@pytest.mark.parametrize("network", list(TINY))
def test_artifact_reproduces_eager_on_prepared_samples(exported, network):
    checkpoint_path, artifact = exported[network]
    checkpoint = load_checkpoint(checkpoint_path)
    model = build_network(network, **checkpoint["network"]["kwargs"])
    model.load_state_dict(checkpoint["model_state"])
    model.eval()
    inputs = collate(_prepared(checkpoint, None)[1:])  # a batch of 2 real prepared slices
    with torch.no_grad():
        expected = model(*inputs.values())
    outputs = load_and_run(artifact, inputs)
    for runtime in ("torchscript", "onnx"):
        got = torch.from_numpy(outputs[runtime])
        assert got.shape == expected.shape
        assert float((got - expected).norm() / expected.norm()) < 1e-4, runtime
