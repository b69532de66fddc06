"""KIKI-net: cross-domain CNNs alternating in k-space and image space (Eo et al., MRM 2018).

Each of ``n_iter`` iterations applies a k-space CNN (KCNN, on the k-space's real/imaginary channels), goes to the
image (F^H), applies a residual image CNN (ICNN) and enforces k-space data consistency
(``models.nets.data_consistency``), so the blocks run K, I, K, I, ... and the output |x| is data-consistent. Single
coil: image F^H k. Multicoil: the KCNN runs on each coil's k-space (shared weights, coils folded into the batch),
the image is the SENSE-combined S^H F^H k and data consistency acts per coil on F S_c x.

Defaults are the KIKI-net the seed thesis's benchmark evaluated (Ramzi, ch. 4; Ramzi et al., Appl. Sci. 2020;
fastMRI reproducible benchmark: ``full_kiki_net(n_convs=16, n_filters=48, activation=lrelu)``, "kikinet-sep-16"
in its evaluation scripts and model cards): 2 iterations (K-I-K-I), blocks of 16 conv3x3 layers of 48 filters with
leaky ReLUs of slope 0.1 and a linear 1x1 output conv, 312,770 parameters per block, 1,251,080 in all (the thesis:
about 1.25M).

Two departures from the reference, both so that the network trains at all (``init="zero-output"``,
``kspace_residual=True``; ``init="default", kspace_residual=False`` is the reference's form): the KCNN is residual,
``k + KCNN(k)``, and every block's output conv starts at zero with He-initialised hidden convs, so every block
starts as the identity and the untrained network is exactly the zero-filled reconstruction. With torch's default
initialisation a 16-25-layer plain stack passes almost nothing of its input on (a constant function, no gradient to
its early layers), and a non-residual KCNN then replaces the k-space by that constant: trained jointly the network
stayed at zero-filling, and trained stage-wise each new random KCNN undid the blocks trained before it.

The thesis trained it block by block (the reference grows the model one block at a time, each trained with the
earlier ones frozen): ``set_training_stage`` freezes all but one block and runs the network only up to it; the
trainer's ``loop.stagewise`` drives it. The reference trains each KCNN against the fully sampled k-space and the
first ICNN against the complex image; here every stage is trained on the task's image loss.
"""

from __future__ import annotations

import torch
from torch import nn

from mrdserve.models.nets.complex import (
    channels_to_complex,
    complex_to_channels,
    complex_to_real,
    magnitude,
    real_to_complex,
)
from mrdserve.models.nets.conv_stack import ConvStack
from mrdserve.models.nets.data_consistency import data_consistency, image_to_kspace, kspace_to_image, measured_kspace


def fold_coils(kspace: torch.Tensor) -> torch.Tensor:
    """Complex coil k-spaces ``[B, C, ky, kx]`` -> real ``[B * C, 2, ky, kx]``: the KCNN sees each coil alone."""
    return complex_to_real(kspace).flatten(0, 1).movedim(-1, 1)  # real layout: no complex reshape in the exporter


def unfold_coils(folded: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of ``fold_coils``: real ``[B * C, 2, ky, kx]`` -> complex with the shape of ``like``."""
    unfolded = folded.movedim(1, -1).reshape(like.shape[0], like.shape[1], like.shape[2], like.shape[3], 2)
    return real_to_complex(unfolded)


class KIKINet(nn.Module):
    """KIKI-net, single-coil or SENSE-combined multicoil.

    ``forward(kspace [B, C, ky, kx, 2], mask [B, 1, ky, kx] float, smaps [B, C, ky, kx, 2] or None) -> [B, ky, kx]``;
    without ``smaps`` the k-space must have one coil (``[B, 1, ky, kx, 2]`` or ``[B, ky, kx, 2]``).

    Args:
        n_iter: KI iterations (2 blocks each).
        n_layers: conv3x3 layers per block (N_K = N_I) before its linear output conv.
        n_filters: filters of those layers.
        output_kernel_size: kernel of each block's linear output conv (1 as in the benchmark).
        negative_slope: slope of the leaky ReLUs (0.1 as in the benchmark; 0 for plain ReLUs).
        kspace_residual: KCNN as ``k + KCNN(k)`` (the reference's KCNN replaces k: False).
        init: ``"zero-output"`` (every block starts as the identity) or ``"default"`` (torch's; ``ConvStack``).
        dc_lambda: lambda of the noise-aware data consistency; None (default) is lambda = inf, plain replacement.
        learn_lambda: learn lambda (one per iteration), initialised at ``dc_lambda``.
    """

    def __init__(self, n_iter: int = 2, n_layers: int = 16, n_filters: int = 48, output_kernel_size: int = 1,
                 negative_slope: float = 0.1, kspace_residual: bool = True, init: str = "zero-output",
                 dc_lambda: float | None = None, learn_lambda: bool = False) -> None:
        super().__init__()
        if min(n_iter, n_layers, n_filters) < 1:
            raise ValueError(f"n_iter ({n_iter}), n_layers ({n_layers}) and n_filters ({n_filters}) must be >= 1")
        self.n_blocks = 2 * n_iter
        self.n_stages = self.n_blocks  # stage-wise training: one stage per block
        self.kspace_residual = kspace_residual
        block = (2, n_filters, n_layers, output_kernel_size, negative_slope, init)
        self.kspace_nets = nn.ModuleList(ConvStack(*block) for _ in range(n_iter))
        self.image_nets = nn.ModuleList(ConvStack(*block) for _ in range(n_iter))
        self.consistency = nn.ModuleList(data_consistency(dc_lambda, learn_lambda) for _ in range(n_iter))
        self.active_blocks = self.n_blocks  # blocks the forward runs (fewer during stage-wise training)
        self.training_stage: int | None = None

    @torch.jit.unused
    def stage_modules(self, stage: int) -> list[nn.Module]:
        """The modules trained at ``stage`` (0-based, in K, I, K, I order): a KCNN, or an ICNN with its data
        consistency (a learned lambda belongs to the image block it follows)."""
        if not 0 <= stage < self.n_blocks:
            raise ValueError(f"stage must be in [0, {self.n_blocks}) for {self.n_blocks} blocks, got {stage}")
        if stage % 2 == 0:
            return [self.kspace_nets[stage // 2]]
        return [self.image_nets[stage // 2], self.consistency[stage // 2]]

    @torch.jit.unused
    def set_training_stage(self, stage: int | None) -> list[nn.Parameter]:
        """Stage-wise training: train block ``stage`` only, with the forward stopping after it; None restores
        the whole network (all parameters trainable, every block run). Returns the trainable parameters."""
        if stage is None:
            for parameter in self.parameters():
                parameter.requires_grad_(True)
            self.active_blocks = self.n_blocks
            self.training_stage = None
            return list(self.parameters())
        trained = self.stage_modules(stage)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        for module in trained:
            for parameter in module.parameters():
                parameter.requires_grad_(True)
        self.active_blocks = stage + 1
        self.training_stage = stage
        return [p for module in trained for p in module.parameters()]

    def reconstruct(self, kspace: torch.Tensor, mask: torch.Tensor,
                    smaps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Complex image ``[B, 1, y, x]`` and the last (coil) k-space ``[B, C, ky, kx]`` (data-consistent unless
        a stage-wise forward stops after a KCNN)."""
        measured, maps = measured_kspace(kspace, mask, smaps)
        current = measured
        image = kspace_to_image(measured, maps)
        blocks = zip(self.kspace_nets, self.image_nets, self.consistency)  # noqa: B905 (TorchScript: no strict=)
        for index, (kspace_net, image_net, consistency) in enumerate(blocks):
            if 2 * index < self.active_blocks:
                folded = fold_coils(current)
                folded = folded + kspace_net(folded) if self.kspace_residual else kspace_net(folded)
                current = unfold_coils(folded, current)
                image = kspace_to_image(current, maps)
            if 2 * index + 1 < self.active_blocks:
                image = image + channels_to_complex(image_net(complex_to_channels(image)))
                current = consistency(image_to_kspace(image, maps), measured, mask)
                image = kspace_to_image(current, maps)
        return image, current

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor | None = None) -> torch.Tensor:
        image, _ = self.reconstruct(kspace, mask, smaps)
        return magnitude(image).squeeze(1)
