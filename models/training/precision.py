"""bfloat16 mixed precision for training (``loop.mixed_precision``): autocast on the convolution blocks only."""

from __future__ import annotations

import types
import warnings
from typing import Any

import torch
from torch import nn

AUTOCAST_DTYPES = {"bf16": torch.bfloat16}  # loop.mixed_precision -> autocast dtype
_COMPUTE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                   nn.Linear)


def _plain_torch_layers(module: nn.Module) -> bool:
    """Whether ``module`` and all its descendants are torch.nn's own layers (no forward of ours inside)."""
    return all(type(m).__module__.startswith("torch.nn.") for m in module.modules())


def autocast_regions(model: nn.Module) -> list[nn.Module]:
    """The largest sub-modules of ``model`` built only of torch.nn layers (conv stacks, single convolutions)
    that hold a convolution or linear layer: where low precision pays and no complex arithmetic happens."""
    if _plain_torch_layers(model) and not isinstance(model, nn.ModuleList | nn.ModuleDict):
        return [model] if any(isinstance(m, _COMPUTE_LAYERS) for m in model.modules()) else []
    return [region for child in model.children() for region in autocast_regions(child)]


def _to_float32(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype == dtype else value
    if isinstance(value, tuple | list):
        return type(value)(_to_float32(item, dtype) for item in value)
    return value


def _autocast_forward(module: nn.Module, original: Any, device_type: str, dtype: torch.dtype, *args: Any,
                      **kwargs: Any) -> Any:
    if not module.training:  # validation, evaluation and export see the float32 network
        return original(*args, **kwargs)
    with torch.autocast(device_type, dtype=dtype):
        output = original(*args, **kwargs)
    return _to_float32(output, dtype)


def enable_mixed_precision(model: nn.Module, device: torch.device, mode: str) -> int:
    """Run the convolution blocks of ``model`` under ``torch.autocast`` (``mode`` "bf16") while training.

    Autocast around the whole forward does not work for our networks: a convolution's bfloat16 output reaches
    ``torch.complex`` (XPDNet, Cascade-net, KIKI-net: "Expected both inputs to be Half, Float or Double") and
    complex FFTs have no bfloat16 kernels. So only ``autocast_regions`` run in bfloat16, each handing float32
    back, and the physics between them (FFTs, SENSE / Toeplitz operators, data consistency) and the loss stay
    float32. Like gradient checkpointing this replaces ``forward`` on those modules (instance attribute: state
    dict and class unchanged); in eval mode they run float32. Returns how many regions were wrapped.
    """
    dtype = AUTOCAST_DTYPES[mode]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"loop.mixed_precision: {mode!r} needs a GPU with bfloat16 support; use loop.amp or none")
    regions = autocast_regions(model)
    for module in regions:
        original = module.forward
        module.forward = types.MethodType(
            lambda self, *a, _orig=original, **k: _autocast_forward(self, _orig, device.type, dtype, *a, **k),
            module)
    if not regions:
        warnings.warn(f"mixed precision: {type(model).__name__} has no sub-module built only of torch.nn "
                      "layers; it trains in float32", stacklevel=2)
    return len(regions)
