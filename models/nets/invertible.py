"""Invertible layers of the i-RIM (Putzky & Welling 2019) and memory-free invertible backpropagation.

Every layer maps a state ``[B, n, *S]`` to one of the same shape and has an exact ``inverse``; all take a
``context`` list (the measured data the data-consistency update needs; the other layers ignore it) so a
sequence of them has one signature. ``invertible_sequence`` runs a sequence inside an ``autograd.Function``
that keeps only the sequence's output: its backward reconstructs each layer's input by inversion and
recomputes that one layer to get its gradients, so training memory does not grow with the number of layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional

from mrdserve.models.nets.padding import crop_like, pad_to_multiple


class WeightNormConv2d(nn.Module):
    """2D convolution with weight normalisation (Salimans & Kingma 2016): ``w = g * v / ||v||`` per output
    channel; written out (not ``nn.utils.weight_norm``) so it scripts and exports."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.direction = nn.Parameter(conv.weight.detach().clone())
        self.gain = nn.Parameter(_norm(conv.weight.detach(), [1, 2, 3]).clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.gain * self.direction / _norm(self.direction, [1, 2, 3])
        return functional.conv2d(x, weight, self.bias, stride=self.stride, padding=self.padding)


class WeightNormConvTranspose2d(nn.Module):
    """Transposed 2D convolution (kernel = stride, no bias) with weight normalisation over dim 0, the
    upsampling layer of the residual block."""

    def __init__(self, in_channels: int, out_channels: int, factor: int) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d(in_channels, out_channels, factor, stride=factor, bias=False)
        self.direction = nn.Parameter(conv.weight.detach().clone())
        self.gain = nn.Parameter(_norm(conv.weight.detach(), [1, 2, 3]).clone())
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.gain * self.direction / _norm(self.direction, [1, 2, 3])
        return functional.conv_transpose2d(x, weight, stride=self.factor)


def _norm(weight: torch.Tensor, dims: list[int]) -> torch.Tensor:
    return torch.sqrt((weight * weight).sum(dim=dims, keepdim=True))


class DownsamplingResidualBlock(nn.Module):
    """The i-RIM coupling function: strided conv (kernel = stride = ``factor``) -> ReLU -> 3x3 conv -> ReLU ->
    transposed conv back to full resolution -> gated linear unit; all weight-normalised. The input is
    zero-padded to a multiple of ``factor`` and the output cropped back, so any matrix size works."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, factor: int) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"downsampling factor must be >= 1, got {factor}")
        self.factor = factor
        self.down = WeightNormConv2d(in_channels, hidden, factor, stride=factor)
        self.middle = WeightNormConv2d(hidden, hidden, 3, padding=1)
        self.up = WeightNormConvTranspose2d(hidden, 2 * out_channels, factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = functional.relu(self.down(pad_to_multiple(x, self.factor, 2)))
        hidden = functional.relu(self.middle(hidden))
        return functional.glu(crop_like(self.up(hidden), x, 2), dim=1)


class Householder1x1(nn.Module):
    """Orthogonal 1x1 convolution ``U = H_1 ... H_D`` from ``D`` Householder reflections
    ``H_i = I - 2 v_i v_i^T / (v_i^T v_i)``; its inverse is ``U^T``."""

    def __init__(self, n_channels: int, n_reflections: int = 3) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.randn(min(n_reflections, n_channels), n_channels))
        self.n_reflections = min(n_reflections, n_channels)

    def matrix(self) -> torch.Tensor:
        """The orthogonal matrix ``U`` ``[n, n]``."""
        n = self.vectors.shape[1]
        result = torch.eye(n, dtype=self.vectors.dtype, device=self.vectors.device)
        for i in range(self.n_reflections):
            v = self.vectors[i]
            result = result - 2.0 * torch.outer(result @ v, v) / (v * v).sum()
        return result

    def forward(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        weight = self.matrix()
        if transpose:
            weight = weight.t()
        return functional.conv2d(x, weight[:, :, None, None])


class InvertibleLayer(nn.Module):
    """One i-RIM layer ``x -> U^T C(U x)``: Householder 1x1 convolution ``U``, additive coupling ``C`` (the
    second half of the channels += residual block of the first half), projected back with ``U^T``."""

    def __init__(self, n_channels: int, hidden: int, factor: int, n_reflections: int = 3) -> None:
        super().__init__()
        if n_channels < 2:
            raise ValueError(f"n_channels must be >= 2 for a coupling layer, got {n_channels}")
        self.n_left = n_channels // 2
        self.rotation = Householder1x1(n_channels, n_reflections)
        self.coupling = DownsamplingResidualBlock(self.n_left, n_channels - self.n_left, hidden, factor)

    def forward(self, x: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        z = self.rotation(x)
        left, right = z[:, : self.n_left], z[:, self.n_left :]
        z = torch.cat([left, right + self.coupling(left)], dim=1)
        return self.rotation(z, transpose=True)

    def inverse(self, y: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        z = self.rotation(y)
        left, right = z[:, : self.n_left], z[:, self.n_left :]
        z = torch.cat([left, right - self.coupling(left)], dim=1)
        return self.rotation(z, transpose=True)


def sequence_forward(layers: Sequence[nn.Module], x: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
    """Apply invertible ``layers`` in order (ordinary autograd)."""
    for layer in layers:
        x = layer(x, context)
    return x


def sequence_inverse(layers: Sequence[nn.Module], y: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
    """Invert ``sequence_forward``: the layers' inverses in reverse order."""
    for layer in reversed(list(layers)):
        y = layer.inverse(y, context)
    return y


class _InvertibleSequenceFunction(torch.autograd.Function):
    """Forward without a graph, keeping only the output; backward rebuilds inputs layer by layer by inversion.

    Arguments: the state ``x``, the layers, per layer the indices of its parameters in ``tensors[n_context:]``,
    ``n_context``, then the context tensors and the parameters (inputs, so autograd returns their gradients).
    """

    @staticmethod
    def forward(ctx, x, layers, param_indices, n_context, *tensors):  # type: ignore[override]
        context = list(tensors[:n_context])
        with torch.no_grad():
            y = sequence_forward(layers, x, context)
        ctx.layers = layers
        ctx.param_indices = param_indices
        ctx.n_params = len(tensors) - n_context
        ctx.save_for_backward(y, *context)
        return y

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        y, *context = ctx.saved_tensors
        needs = [c.requires_grad for c in context]
        context_grads: list[torch.Tensor | None] = [None] * len(context)
        param_grads: list[torch.Tensor | None] = [None] * ctx.n_params
        # Parameter gradients go straight into ``.grad`` as each layer is inverted, so no second copy of every
        # gradient waits for the end of the backward pass (that copy grows with the steps and layers). Under
        # torch.distributed they are returned instead: DDP's all-reduce hooks only see returned gradients.
        in_place = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        for layer, indices in zip(reversed(ctx.layers), reversed(ctx.param_indices), strict=True):
            with torch.no_grad():
                x = layer.inverse(y, context)
            with torch.enable_grad():
                x_leaf = x.detach().requires_grad_(True)
                live = [c.detach().requires_grad_(True) if need else c for c, need in zip(context, needs, strict=True)]
                params = [p for p in layer.parameters() if p.requires_grad]
                wanted = [x_leaf, *params, *[c for c, need in zip(live, needs, strict=True) if need]]
                grads = list(torch.autograd.grad(layer(x_leaf, live), wanted, grad_output, allow_unused=True))
            grad_output = grads.pop(0)
            for index, param, g in zip(indices, params, grads[: len(params)], strict=True):
                if in_place:
                    _accumulate_grad(param, g)
                else:
                    param_grads[index] = _add(param_grads[index], g)
            rest = iter(grads[len(params) :])
            for i, need in enumerate(needs):
                if need:
                    context_grads[i] = _add(context_grads[i], next(rest))
            y = x
        return (grad_output, None, None, None, *context_grads, *param_grads)


def _accumulate_grad(param: torch.Tensor, grad: torch.Tensor | None) -> None:
    """Add ``grad`` into ``param.grad`` the way autograd's leaf accumulation does."""
    if grad is None:
        return
    if param.grad is None:
        param.grad = grad.detach()
    else:
        param.grad.add_(grad.detach())


def _add(total: torch.Tensor | None, term: torch.Tensor | None) -> torch.Tensor | None:
    if term is None:
        return total
    return term if total is None else total + term


def invertible_sequence(layers: Sequence[nn.Module], x: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
    """``sequence_forward`` with invertible backpropagation: activations are recomputed by inversion in the
    backward pass instead of being stored, so memory is constant in the number of layers. Gradients reach the
    layers' parameters (accumulated into ``.grad`` during the pass, so train with ``backward()``; outside
    torch.distributed ``torch.autograd.grad`` w.r.t. them sees none), ``x`` and any ``context`` tensor that requires
    grad. Not scriptable (eager training)."""
    layers = list(layers)
    params: list[nn.Parameter] = []
    index_of: dict[int, int] = {}
    param_indices: list[list[int]] = []
    for layer in layers:
        indices = []
        for p in layer.parameters():
            if p.requires_grad:
                if id(p) not in index_of:
                    index_of[id(p)] = len(params)
                    params.append(p)
                indices.append(index_of[id(p)])
        param_indices.append(indices)
    return _InvertibleSequenceFunction.apply(x, layers, param_indices, len(context), *context, *params)
