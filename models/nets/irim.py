"""Invertible Recurrent Inference Machine (Putzky & Welling 2019, "Invert to Learn to Invert") for Cartesian MRI.

The state ``x`` has ``n_channels`` real channels; channels 0-1 hold the image ``eta`` (real, imaginary),
initialised to ``A^H y``, the others start at zero. Each step is their Eq. (10): ``g_t`` adds the
data-consistency gradient ``A^H(A eta - y)`` of channels 0-1 into channels 2-3 (invertible: it depends only on
channels that it leaves unchanged), then ``h_t`` applies ``n_layers`` invertible layers (Householder 1x1
convolution, additive coupling with the downsampling residual block, ``U^T``). Output: ``|eta|`` at the end.
Training uses invertible backpropagation (memory constant in steps and layers) unless
``invertible_backprop=False``; scripting, export and eval use the plain forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mrdserve.models.nets.complex import channels_to_complex, complex_to_channels, magnitude, real_to_complex
from mrdserve.models.nets.invertible import InvertibleLayer, invertible_sequence, sequence_inverse
from mrdserve.models.physics.kernels import sense_gradient, sense_reduce


class GradientUpdate(nn.Module):
    """``g_t``: channels 2-3 of the state += ``A^H(A eta - y)`` of the image in channels 0-1 (context
    ``[measured k-space, mask, smaps]``, complex k-space and maps)."""

    def forward(self, x: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        return self._update(x, context, 1.0)

    def inverse(self, y: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        return self._update(y, context, -1.0)

    def _update(self, x: torch.Tensor, context: list[torch.Tensor], sign: float) -> torch.Tensor:
        eta = channels_to_complex(x[:, :2])
        gradient = complex_to_channels(sense_gradient(eta, context[0], context[2], context[1]))
        return torch.cat([x[:, :2], x[:, 2:4] + sign * gradient, x[:, 4:]], dim=1)


class IRIM(nn.Module):
    """i-RIM. ``forward(kspace [B, C, ky, kx, 2], mask [B, 1, ky, kx], smaps [B, C, ky, kx, 2]) -> [B, ky, kx]``.

    Args:
        n_steps: recurrent steps, each a gradient update followed by ``n_layers`` invertible layers.
        n_channels: state channels (>= 4: image, gradient; the rest is memory).
        n_layers: invertible layers per step (10 in the benchmark).
        hidden: channels inside the coupling's residual block.
        downsampling: factors of the residual blocks' strided convolutions, cycled over the layers of a step.
        n_reflections: Householder reflections of each orthogonal 1x1 convolution (D = 3).
        invertible_backprop: train with invertible backpropagation (False: ordinary autograd, for comparison).
    """

    def __init__(self, n_steps: int = 8, n_channels: int = 16, n_layers: int = 10, hidden: int = 64,
                 downsampling: Sequence[int] = (2, 4), n_reflections: int = 3,
                 invertible_backprop: bool = True) -> None:
        super().__init__()
        if n_steps < 1 or n_layers < 1 or hidden < 1:
            raise ValueError(f"n_steps, n_layers and hidden must be >= 1, got {n_steps}, {n_layers}, {hidden}")
        if n_channels < 4:
            raise ValueError(f"n_channels must be >= 4 (image and gradient channels), got {n_channels}")
        if len(downsampling) == 0 or min(downsampling) < 1:
            raise ValueError(f"downsampling must be a non-empty sequence of factors >= 1, got {downsampling}")
        self.n_channels = n_channels
        self.invertible_backprop = invertible_backprop
        self.gradient_update = GradientUpdate()
        self.steps = nn.ModuleList([
            nn.ModuleList([InvertibleLayer(n_channels, hidden, downsampling[i % len(downsampling)], n_reflections)
                           for i in range(n_layers)])
            for _ in range(n_steps)])

    def blocks(self) -> list[nn.Module]:
        """The invertible sequence the state goes through: per step ``g_t`` then ``h_t``'s layers."""
        sequence: list[nn.Module] = []
        for step in self.steps:
            sequence.append(self.gradient_update)
            sequence.extend(step)
        return sequence

    def initial_state(self, measured: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor) -> torch.Tensor:
        """``[A^H y (2 channels), zeros]`` ``[B, n_channels, y, x]`` from complex k-space and maps."""
        image = complex_to_channels(sense_reduce(measured, smaps, mask))
        zeros = torch.zeros_like(image[:, :1]).repeat(1, self.n_channels - 2, 1, 1)
        return torch.cat([image, zeros], dim=1)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor) -> torch.Tensor:
        measured = real_to_complex(kspace)
        smaps_c = real_to_complex(smaps)
        context = [measured, mask, smaps_c]
        state = self.initial_state(measured, mask, smaps_c)
        if self.training and self.invertible_backprop and not torch.jit.is_scripting():
            state = self._invertible_forward(state, context)
        else:
            for step in self.steps:
                state = self.gradient_update(state, context)
                for layer in step:
                    state = layer(state, context)
        return magnitude(channels_to_complex(state[:, :2])).squeeze(1)

    @torch.jit.unused
    def _invertible_forward(self, state: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        return invertible_sequence(self.blocks(), state, context)

    @torch.jit.unused
    def inverse_state(self, state: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor,
                      smaps: torch.Tensor) -> torch.Tensor:
        """The state before all steps from the state after them (inversion of the whole step stack)."""
        context = [real_to_complex(kspace), mask, real_to_complex(smaps)]
        return sequence_inverse(self.blocks(), state, context)
