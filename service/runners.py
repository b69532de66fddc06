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
            return self.module(*(t.to(self.device, non_blocking=True) for t in inputs.values()))


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


def default_runner_kind(device: torch.device) -> str:
    """The runner ``auto`` means on ``device``: TorchScript on CPU (measured, see the module docstring) and, without
    a measurement that says otherwise, on CUDA too (no host round trip; ONNX Runtime stays one flag away)."""
    return "torchscript"


def onnx_providers(device: torch.device, providers: list[str] | None = None) -> list[str]:
    """The execution providers to ask ONNX Runtime for: the configured ones, else CUDA+CPU on a GPU, else CPU."""
    if providers:
        return list(providers)
    if device.type == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def load_runner(artifact_dir: Path, kind: str = "auto", device: str | torch.device = "cpu",
                providers: list[str] | None = None) -> Runner:
    """Load the runner of ``kind`` for an artifact; ``auto`` picks ``default_runner_kind``. ``providers`` orders
    ONNX Runtime's execution providers (TensorRT, CUDA, CPU...) for the ``onnx`` kind."""
    if kind not in RUNNER_KINDS:
        raise ValueError(f"runner must be one of {', '.join(RUNNER_KINDS)}, got {kind!r}")
    device = resolve_device(device) if isinstance(device, str) else device
    if kind == "auto":
        kind = default_runner_kind(device)
    if kind == "onnx":
        return OnnxRunner(artifact_dir, onnx_providers(device, providers))
    return TorchScriptRunner(artifact_dir, device)


def to_device(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch to ``device`` once; on CUDA through pinned host memory with asynchronous copies."""
    if device.type != "cuda":
        return {name: t.to(device) for name, t in inputs.items()}
    return {name: (t if t.device == device else t.pin_memory().to(device, non_blocking=True))
            for name, t in inputs.items()}
