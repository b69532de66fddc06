"""PDNet: learned primal-dual (Adler & Oktem 2018) for single-coil Cartesian MRI, the fastMRI benchmark baseline.

Buffers of ``n_primal`` images and ``n_dual`` k-spaces, initialised with F^H M y and y. Each iteration the dual
net (a 3-layer CNN in k-space) sees [dual buffer, M F x_1, y], the primal net (same CNN in image space) sees
[primal buffer, F^H M h_1]; both update their buffer residually. Output: |x_1|. Sizes follow the reference
(fastmri-reproducible-benchmark ``PDNet``): 32 filters, 3 convs, ReLU.
"""

from __future__ import annotations

import torch
from torch import nn

from mrdserve.models.nets.complex import channels_to_complex, complex_to_channels, magnitude, real_to_complex
from mrdserve.models.physics.fft import fftnc, ifftnc


def complex_cnn(n_in: int, n_out: int, n_filters: int = 32, n_convs: int = 3) -> nn.Sequential:
    """conv3x3-ReLU x (n_convs - 1) + linear conv3x3 from ``2 n_in`` to ``2 n_out`` real channels."""
    layers: list[nn.Module] = []
    channels = 2 * n_in
    for _ in range(n_convs - 1):
        layers += [nn.Conv2d(channels, n_filters, 3, padding=1), nn.ReLU()]
        channels = n_filters
    layers.append(nn.Conv2d(channels, 2 * n_out, 3, padding=1))
    return nn.Sequential(*layers)


class PDNet(nn.Module):
    """Single-coil learned primal-dual network.

    ``forward(kspace [B, 1, ky, kx, 2] or [B, ky, kx, 2], mask [B, 1, ky, kx] float) -> [B, ky, kx]``.
    """

    def __init__(self, n_iter: int = 10, n_primal: int = 5, n_dual: int = 5, n_filters: int = 32) -> None:
        super().__init__()
        if min(n_iter, n_primal, n_dual, n_filters) < 1:
            raise ValueError("n_iter, n_primal, n_dual and n_filters must be >= 1")
        self.n_primal = n_primal
        self.n_dual = n_dual
        self.dual_nets = nn.ModuleList([complex_cnn(n_dual + 2, n_dual, n_filters) for _ in range(n_iter)])
        self.primal_nets = nn.ModuleList([complex_cnn(n_primal + 1, n_primal, n_filters) for _ in range(n_iter)])

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if kspace.dim() == 4:
            kspace = kspace.unsqueeze(1)
        measured = real_to_complex(kspace)  # [B, 1, ky, kx]
        mask = mask.reshape(measured.shape[0], 1, measured.shape[-2], measured.shape[-1])
        measured = mask * measured
        image = ifftnc(measured, 2)  # [B, 1, y, x]
        primal = torch.cat([image] * self.n_primal, dim=1)
        dual = torch.cat([measured] * self.n_dual, dim=1)
        for dual_net, primal_net in zip(self.dual_nets, self.primal_nets):  # noqa: B905 (TorchScript: no strict=)
            predicted = mask * fftnc(primal[:, :1], 2)
            dual_input = complex_to_channels(torch.cat([dual, predicted, measured], dim=1))
            dual = dual + channels_to_complex(dual_net(dual_input))
            back = ifftnc(mask * dual[:, :1], 2)
            primal_input = complex_to_channels(torch.cat([primal, back], dim=1))
            primal = primal + channels_to_complex(primal_net(primal_input))
        return magnitude(primal[:, :1]).squeeze(1)  # no complex select in the ONNX exporter
