"""Shared export check for networks: TorchScript (script, else trace) and ONNX (dynamo, opset 18, dynamic batch,
optionally dynamic spatial axes) must reproduce eager PyTorch, the ONNX model at a batch size (and optionally
matrix sizes) other than the one it was exported with."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np
import torch


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-12))


def _as_tuple(outputs: object) -> tuple[torch.Tensor, ...]:
    if isinstance(outputs, torch.Tensor):
        return (outputs,)
    return tuple(outputs)  # type: ignore[arg-type]


def _script_or_trace(model: torch.nn.Module, example_inputs: tuple) -> tuple[torch.jit.ScriptModule, str]:
    """Script the model; fall back to tracing (and say so) where scripting fails."""
    try:
        return torch.jit.script(model), "script"
    except Exception:  # any scripting failure falls back to tracing
        return torch.jit.trace(model, example_inputs, check_trace=False), "trace"


def assert_exports(
    model: torch.nn.Module,
    example_inputs: tuple,
    other_batch_inputs: tuple,
    rtol: float = 1e-4,
    require_script: bool = True,
    dynamic_dims: Sequence[Sequence[int]] | None = None,
    other_size_inputs: Sequence[tuple] = (),
) -> str:
    """Check TorchScript and ONNX exports of ``model`` against eager; return "script" or "trace".

    ``example_inputs`` are used for export, ``other_batch_inputs`` (same shapes but for dim 0) for the
    comparison. Every input's dim 0 is exported as one dynamic batch dimension. With ``require_script`` the
    model must script (tracing is not accepted). ``dynamic_dims`` (one entry per input) lists further dims
    exported as dynamic (``Dim.AUTO``, e.g. spatial axes); ``other_size_inputs`` are further input tuples (e.g.
    other matrix sizes) on which TorchScript and ONNX Runtime must reproduce eager too.
    """
    import onnxruntime as ort

    model = model.eval()
    checks = [other_batch_inputs, *other_size_inputs]
    with torch.no_grad():
        expected = [[o.detach().numpy() for o in _as_tuple(model(*inputs))] for inputs in checks]
        scripted, how = _script_or_trace(model, example_inputs)
        if require_script:
            assert how == "script", "model does not script with torch.jit.script"
        for inputs, wanted in zip(checks, expected, strict=True):
            for got, want in zip(_as_tuple(scripted(*inputs)), wanted, strict=True):
                assert _relative_error(got.numpy(), want) < rtol, "TorchScript output differs from eager"

    batch = torch.export.Dim("batch", min=1, max=64)
    extra = dynamic_dims if dynamic_dims is not None else [()] * len(example_inputs)
    assert len(extra) == len(example_inputs), "dynamic_dims needs one entry per input"
    dynamic_shapes = tuple({0: batch} | {d: torch.export.Dim.AUTO for d in dims} for dims in extra)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(
            model,
            example_inputs,
            path,
            dynamo=True,
            opset_version=18,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False,
        )
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        for inputs, wanted in zip(checks, expected, strict=True):
            feeds = {name: x.detach().numpy() for name, x in zip(names, inputs, strict=True)}
            outputs = session.run(None, feeds)
            assert len(outputs) == len(wanted)
            for got, want in zip(outputs, wanted, strict=True):
                assert got.shape == want.shape, f"ONNX output shape {got.shape} != eager {want.shape}"
                error = _relative_error(got, want)
                assert error < rtol, f"ONNX Runtime output differs from eager: relative error {error:.2e}"
    return how
