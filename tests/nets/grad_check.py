"""Shared check that a backward pass reaches every parameter of a network."""

from __future__ import annotations

import torch


def assert_gradients_reach_all_parameters(model: torch.nn.Module, inputs: tuple) -> None:
    """Backpropagate the sum of squares of the output; every parameter's gradient must exist and be nonzero."""
    model.zero_grad()
    output = model(*inputs)
    (output * output).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"no gradient reached {name}"
        assert parameter.grad.abs().sum() > 0, f"gradient of {name} is all zero"
