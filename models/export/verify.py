"""Run an exported artifact exactly as the runtime would: TorchScript and ONNX Runtime, no network classes.

Imports only torch, onnxruntime and the data-layer manifest module, never ``models.nets``, so a successful
run proves the artifact stands alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from mrdserve.models.data.manifest_schema import verify_artifact


def load_and_run(artifact_dir: str | Path,
                 inputs: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """Verify ``artifact_dir`` (manifest + hashes) and run ``inputs`` (forward order) through both files.

    Returns ``{"torchscript": output, "onnx": output}`` as numpy arrays.
    """
    import onnxruntime

    directory = Path(artifact_dir)
    manifest = verify_artifact(directory)
    tensors = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)
    expected = [spec["name"] for spec in manifest["inputs"]]
    if len(tensors) != len(expected):
        raise ValueError(f"artifact {manifest['name']} takes {len(expected)} inputs ({', '.join(expected)}), "
                         f"got {len(tensors)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notice; TorchScript is what we serve
        scripted = torch.jit.load(str(directory / "model.ts"), map_location="cpu")
    with torch.no_grad():
        script_out = scripted(*tensors).numpy()
    session = onnxruntime.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    (onnx_out,) = session.run(None, {n: t.detach().cpu().numpy() for n, t in zip(names, tensors, strict=True)})
    return {"torchscript": script_out, "onnx": onnx_out}
