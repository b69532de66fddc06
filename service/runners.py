"""Runners: execute an exported artifact (TorchScript or ONNX Runtime), weights loaded once, kept on the device.

On CPU TorchScript is the default: ONNX Runtime's CPU FFT is more than an order of magnitude slower for the
FFT sizes the networks use (bench/networks.py); ONNX Runtime remains available for every device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

RUNNER_KINDS = ("auto", "torchscript", "onnx")


class Runner(Protocol):
    """Runs an artifact on named real input tensors (batch first) and returns its output tensor."""

    kind: str

    def run(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor: ...


class TorchScriptRunner:
    """``model.ts`` loaded with ``torch.jit.load`` on ``device``, in inference mode."""

    kind = "torchscript"

    def __init__(self, artifact_dir: Path, device: torch.device) -> None:
        self.device = device
        self.module = torch.jit.load(str(artifact_dir / "model.ts"), map_location=device).eval()

    def run(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(*(t.to(self.device) for t in inputs.values()))


class OnnxRunner:
    """``model.onnx`` in an ONNX Runtime session with the given execution providers."""

    kind = "onnx"

    def __init__(self, artifact_dir: Path, providers: list[str] | None = None) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(artifact_dir / "model.onnx"),
                                                    providers=providers or ["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if list(inputs) != self.input_names:
            raise ValueError(f"inputs {list(inputs)} do not match the model's {self.input_names}")
        feeds = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in inputs.items()}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch understands it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_runner(artifact_dir: Path, kind: str = "auto", device: str | torch.device = "cpu") -> Runner:
    """Load the runner of ``kind`` for an artifact; ``auto`` picks TorchScript (see the module docstring)."""
    if kind not in RUNNER_KINDS:
        raise ValueError(f"runner must be one of {', '.join(RUNNER_KINDS)}, got {kind!r}")
    device = resolve_device(device) if isinstance(device, str) else device
    if kind == "onnx":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else None
        return OnnxRunner(artifact_dir, providers)
    return TorchScriptRunner(artifact_dir, device)
