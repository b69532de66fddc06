"""Recurrent Inference Machine (Putzky & Welling 2017) for Cartesian (multicoil or single-coil) MRI.

The i-RIM paper's baseline: per step ``eta_{t+1} = eta_t + g([eta_t, grad_t], s_t)`` where ``grad_t`` is the
gradient of the Gaussian log-likelihood, ``A^H(A eta_t - y)`` with the SENSE operator A, times a learned
per-step scale (the stabilisation; initialised at 1), and g is the reference ``ConvRNN``: conv 5x5 (64, ReLU)
-> ConvGRU (64, 1x1 gates) -> conv 3x3 dilation 2 (64, ReLU) -> ConvGRU (64, 1x1) -> conv 3x3 (2, no bias).
The weights are shared over the steps (recurrent). Zero padding instead of the reference's replication
padding. ``eta_0 = A^H y``; the output is ``|eta_T|``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from mrdserve.models.nets.complex import channels_to_complex, complex_to_channels, magnitude, real_to_complex
from mrdserve.models.physics.kernels import sense_gradient, sense_reduce


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell (PyTorch's GRU equations with convolutions for the linear maps)."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.input_gates = nn.Conv2d(in_channels, 3 * hidden, kernel_size, padding=kernel_size // 2)
        self.hidden_gates = nn.Conv2d(hidden, 3 * hidden, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        xz, xr, xn = self.input_gates(x).chunk(3, dim=1)
        hz, hr, hn = self.hidden_gates(state).chunk(3, dim=1)
        update = torch.sigmoid(xz + hz)
        reset = torch.sigmoid(xr + hr)
        candidate = torch.tanh(xn + reset * hn)
        return (1.0 - update) * state + update * candidate


class RIMCell(nn.Module):
    """The RIM update network g: ``[eta, grad]`` (4 real channels) and two hidden states -> ``delta eta``."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv1 = nn.Conv2d(4, hidden, 5, padding=2)
        self.gru1 = ConvGRUCell(hidden, hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2)
        self.gru2 = ConvGRUCell(hidden, hidden)
        self.conv3 = nn.Conv2d(hidden, 2, 3, padding=1, bias=False)

    def forward(self, features: torch.Tensor, state1: torch.Tensor,
                state2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        state1 = self.gru1(functional.relu(self.conv1(features)), state1)
        state2 = self.gru2(functional.relu(self.conv2(state1)), state2)
        return self.conv3(state2), state1, state2


class RIM(nn.Module):
    """RIM. ``forward(kspace [B, C, ky, kx, 2], mask [B, 1, ky, kx], smaps [B, C, ky, kx, 2]) -> [B, ky, kx]``;
    ``forward_steps`` returns the magnitude after every step (the trainer averages the loss over them).

    Args:
        n_steps: recurrent steps (8 as in the i-RIM paper's baseline).
        hidden: channels of the convolutions and the GRU states (64).
    """

    def __init__(self, n_steps: int = 8, hidden: int = 64) -> None:
        super().__init__()
        if n_steps < 1 or hidden < 1:
            raise ValueError(f"n_steps and hidden must be >= 1, got {n_steps} and {hidden}")
        self.n_steps = n_steps
        self.hidden = hidden
        self.cell = RIMCell(hidden)
        self.gradient_scales = nn.Parameter(torch.ones(n_steps))

    def forward_steps(self, kspace: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor) -> list[torch.Tensor]:
        measured = real_to_complex(kspace)
        smaps_c = real_to_complex(smaps)
        eta = sense_reduce(measured, smaps_c, mask)  # [B, 1, y, x] complex
        zeros = torch.zeros_like(mask[:, :1]).repeat(1, self.hidden, 1, 1)
        state1, state2 = zeros, zeros
        outputs: list[torch.Tensor] = []
        for t in range(self.n_steps):
            gradient = self.gradient_scales[t] * sense_gradient(eta, measured, smaps_c, mask)
            features = complex_to_channels(torch.cat([eta, gradient], dim=1))
            delta, state1, state2 = self.cell(features, state1, state2)
            eta = eta + channels_to_complex(delta)
            outputs.append(magnitude(eta).squeeze(1))
        return outputs

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(kspace, mask, smaps)[-1]
