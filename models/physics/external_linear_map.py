"""Autograd for linear maps computed outside torch (finufft, cufinufft): the gradient is the adjoint map.

For a linear map A applied to complex x, torch's backward of ``y = A x`` given ``dL/dy*`` is ``A^H (dL/dy*)``;
so the backward of A is the forward of A^H (and vice versa), and second-order gradients work the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

TensorMap = Callable[[torch.Tensor], torch.Tensor]


class ExternalLinearMap(torch.autograd.Function):
    """``ExternalLinearMap.apply(x, apply_fn, adjoint_fn)``: ``apply_fn(x)``, differentiated by ``adjoint_fn``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, apply_fn: TensorMap, adjoint_fn: TensorMap) -> torch.Tensor:
        ctx.adjoint_fn = adjoint_fn
        ctx.apply_fn = apply_fn
        return apply_fn(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        return ExternalLinearMap.apply(grad, ctx.adjoint_fn, ctx.apply_fn), None, None


def apply_linear_map(x: torch.Tensor, apply_fn: TensorMap, adjoint_fn: TensorMap) -> torch.Tensor:
    """``apply_fn(x)`` with autograd through ``adjoint_fn`` (both must be exact adjoints of each other)."""
    result: torch.Tensor = ExternalLinearMap.apply(x, apply_fn, adjoint_fn)
    return result
