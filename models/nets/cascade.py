"""Cascade-net: deep cascade of CNNs with k-space data consistency (Schlemper et al., IEEE TMI 2018).

Starting from the zero-filled image, each of ``n_cascades`` cascades applies a residual image-domain CNN
(``ConvStack``: conv3x3-ReLU layers, a linear conv3x3 back to real/imaginary channels) and then a data-consistency
layer in k-space (``models.nets.data_consistency``: replacement of the sampled points by the measured ones, or the
noise-aware weighted form with a fixed or learned lambda). Single coil: image F^H k. Multicoil: the image is the
SENSE-combined S^H F^H k with the prepared sensitivities and data consistency acts on each coil's k-space F S_c x.
Defaults are the configuration of the seed thesis's benchmark (Ramzi, ch. 4; fastMRI reproducible benchmark): 5
cascades of 5 conv3x3-ReLU layers of 48 filters plus a linear conv3x3 to 2 channels, 84,914 parameters per
cascade, 424,570 in all (the thesis: about 425k). Output: |x|.
"""

from __future__ import annotations

import torch
from torch import nn

from mrdserve.models.nets.complex import channels_to_complex, complex_to_channels, magnitude
from mrdserve.models.nets.conv_stack import ConvStack
from mrdserve.models.nets.data_consistency import data_consistency, image_to_kspace, kspace_to_image, measured_kspace


class CascadeNet(nn.Module):
    """Cascade-net, single-coil or SENSE-combined multicoil.

    ``forward(kspace [B, C, ky, kx, 2], mask [B, 1, ky, kx] float, smaps [B, C, ky, kx, 2] or None) -> [B, ky, kx]``;
    without ``smaps`` the k-space must have one coil (``[B, 1, ky, kx, 2]`` or ``[B, ky, kx, 2]``).

    Args:
        n_cascades: CNN + data-consistency cascades (n_c).
        n_layers: conv3x3-ReLU layers per CNN before its linear output conv (5: six convolutions in all).
        n_filters: filters of those layers.
        dc_lambda: lambda of the noise-aware data consistency; None (default) is lambda = inf, plain replacement.
        learn_lambda: learn lambda (one per cascade), initialised at ``dc_lambda``.
    """

    def __init__(self, n_cascades: int = 5, n_layers: int = 5, n_filters: int = 48, dc_lambda: float | None = None,
                 learn_lambda: bool = False) -> None:
        super().__init__()
        if min(n_cascades, n_layers, n_filters) < 1:
            raise ValueError(f"n_cascades ({n_cascades}), n_layers ({n_layers}) and n_filters ({n_filters}) "
                             "must be >= 1")
        self.image_nets = nn.ModuleList(ConvStack(2, n_filters, n_layers, 3) for _ in range(n_cascades))
        self.consistency = nn.ModuleList(data_consistency(dc_lambda, learn_lambda) for _ in range(n_cascades))

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor,
                    smaps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Complex image ``[B, 1, y, x]`` and the last data-consistent (coil) k-space ``[B, C, ky, kx]``."""
        measured, maps = measured_kspace(kspace, mask, smaps)
        image = kspace_to_image(measured, maps)
        corrected = measured
        for image_net, consistency in zip(self.image_nets, self.consistency):  # noqa: B905 (TorchScript: no strict=)
            image = image + channels_to_complex(image_net(complex_to_channels(image)))
            corrected = consistency(image_to_kspace(image, maps), measured, mask)
            image = kspace_to_image(corrected, maps)
        return image, corrected

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None) -> torch.Tensor:
        image, _ = self.reconstruct(kspace, mask, smaps)
        return magnitude(image).squeeze(1)
