"""Preparation of non-Cartesian data for NC-PDNet-style networks: one function for training and serving.

Turns raw samples and their trajectory into the tensors the exported network takes: the density-compensated
adjoint (per coil ``A_c^H D y_c`` for multicoil, uncombined, so a network that refines the sensitivities can
combine it with its own maps; ``A^H D y`` for single coil), the Toeplitz kernel of ``A^H D A`` (D inside)
and the sensitivities.

Scale convention: ``scale[b]`` is a robust maximum (the ``scale_quantile`` quantile, default 0.99) of the
coil-combined ``|A^H D y_b|`` (given maps) for the unscaled data; the data are divided by it, so ``adjoint``
(and ``data``) are ``O(1)``. The operator and its kernel are linear and unscaled; a network output (an
image or magnitude) in original units is ``output * scale[b]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mrdserve.models.physics.density import pipe_menon_density
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.nufft_cache import trajectory_hash
from mrdserve.models.physics.sensitivities import sensitivities_noncartesian


@dataclass(frozen=True)
class NonCartesianInputs:
    """Prepared tensors (complex64 unless stated) for one batch of slices/volumes sharing a trajectory.

    adjoint: single coil ``[B, *S]`` = A^H D (data / scale); multicoil ``[B, C, *S]`` = A_c^H D (data_c / scale),
        per coil and not combined (``combined_adjoint`` combines it with ``smaps``).
    kernel: ``[*2S]`` Toeplitz kernel of A^H D A (shared by the batch).
    smaps: ``[B, C, *S]`` sensitivities, or None for single coil.
    scale: ``[B]`` float32 scale the data were divided by (multiply outputs by it).
    density: ``(K,)`` float32 density-compensation weights D.
    data: ``[B, C, K]`` the scaled samples (for the NUFFT reference form and losses in k-space).
    """

    adjoint: torch.Tensor
    kernel: torch.Tensor
    smaps: torch.Tensor | None
    scale: torch.Tensor
    density: torch.Tensor
    data: torch.Tensor

    @property
    def multicoil(self) -> bool:
        return self.smaps is not None

    @property
    def combined_adjoint(self) -> torch.Tensor:
        """``[B, *S]`` A^H D (data / scale) combined with the given ``smaps`` (the adjoint itself for single coil)."""
        if self.smaps is None:
            return self.adjoint
        return (self.smaps.conj() * self.adjoint).sum(1)


def _robust_max(images: torch.Tensor, quantile: float) -> torch.Tensor:
    """Per-sample ``quantile`` of ``|images [B, ...]|`` (kthvalue: no size limit), 1 where it is 0."""
    flat = images.abs().reshape(images.shape[0], -1).to(torch.float32)
    k = min(flat.shape[1], max(1, round(quantile * flat.shape[1])))
    value = flat.kthvalue(k, dim=1).values
    return torch.where(value > 0, value, torch.ones_like(value))


def _batched(data: torch.Tensor) -> torch.Tensor:
    if not isinstance(data, torch.Tensor) or not torch.is_complex(data):
        raise TypeError(f"data must be a complex tensor, got {getattr(data, 'dtype', type(data))}")
    if data.dim() == 2:
        return data.unsqueeze(0)
    if data.dim() != 3:
        raise ValueError(f"data must be [C, K] or [B, C, K], got shape {tuple(data.shape)}")
    return data


def _sensitivities(smaps: torch.Tensor | str | None, data: torch.Tensor, trajectory: torch.Tensor,
                   shape: tuple[int, ...], density: torch.Tensor, backend: str, eps: float,
                   trajectory_key: str) -> torch.Tensor | None:
    batch, n_coils = data.shape[:2]
    if smaps is None:
        if n_coils != 1:
            raise ValueError(f"data has {n_coils} coils: give smaps (a tensor or 'estimate') for multicoil data")
        return None
    if isinstance(smaps, str):
        if smaps != "estimate":
            raise ValueError(f"smaps must be a tensor, 'estimate' or None, got {smaps!r}")
        op = NufftOp(trajectory, shape, density=density, backend=backend, eps=eps, trajectory_key=trajectory_key)
        return sensitivities_noncartesian(data, op)
    if not isinstance(smaps, torch.Tensor) or not torch.is_complex(smaps):
        raise TypeError(f"smaps must be a complex tensor, got {getattr(smaps, 'dtype', type(smaps))}")
    if smaps.dim() == len(shape) + 1:
        smaps = smaps.unsqueeze(0).expand(batch, *smaps.shape)
    if smaps.dim() != len(shape) + 2 or tuple(smaps.shape[2:]) != shape or smaps.shape[1] != n_coils \
            or smaps.shape[0] not in (1, batch):
        raise ValueError(f"smaps must be [C, *S] or [B, C, *S] = [{batch}, {n_coils}, *{shape}], "
                         f"got {tuple(smaps.shape)}")
    return smaps.expand(batch, *smaps.shape[1:]).to(device=data.device, dtype=torch.complex64)


def prepare_noncartesian(data: torch.Tensor, trajectory: torch.Tensor, image_shape: tuple[int, ...],
                         density: torch.Tensor | None = None, smaps: torch.Tensor | str | None = None,
                         scale_quantile: float = 0.99, backend: str = "auto", eps: float = 1e-6,
                         trajectory_key: str | None = None) -> NonCartesianInputs:
    """Prepare samples ``[C, K]`` or ``[B, C, K]`` on ``trajectory (d, K)`` for a ``image_shape`` network.

    ``density`` defaults to ``pipe_menon_density``; ``smaps`` is None (single coil, C == 1), a complex tensor
    ``[C, *S]`` / ``[B, C, *S]``, or "estimate" (``sensitivities_noncartesian`` from the k-space centre).
    ``trajectory_key``: ``trajectory_hash(trajectory)`` when the caller has it (e.g. ``KSpaceSample.trajectory_key``);
    otherwise it is computed here, once, for the density, the operators and the Toeplitz kernel.
    """
    data = _batched(data).to(torch.complex64)
    if not isinstance(trajectory, torch.Tensor) or trajectory.is_complex() or trajectory.dim() != 2:
        raise TypeError("trajectory must be a real (d, K) tensor")
    shape = tuple(int(n) for n in image_shape)
    if trajectory.shape[0] != len(shape):
        raise ValueError(f"trajectory has {trajectory.shape[0]} rows but image_shape {shape} has {len(shape)} dims")
    if data.shape[-1] != trajectory.shape[1]:
        raise ValueError(f"data has {data.shape[-1]} samples but the trajectory has {trajectory.shape[1]}")
    if not 0.0 < scale_quantile <= 1.0:
        raise ValueError(f"scale_quantile must lie in (0, 1], got {scale_quantile}")
    trajectory = trajectory.to(data.device)
    trajectory_key = trajectory_key or trajectory_hash(trajectory)
    if density is None:
        density = pipe_menon_density(trajectory, shape, device=data.device, trajectory_key=trajectory_key)
    elif not isinstance(density, torch.Tensor) or density.is_complex() or density.shape != (trajectory.shape[1],):
        raise ValueError(f"density must be a real ({trajectory.shape[1]},) tensor, "
                         f"got {getattr(density, 'dtype', type(density))} {tuple(getattr(density, 'shape', ()))}")
    density = density.to(device=data.device, dtype=torch.float32)
    sens = _sensitivities(smaps, data, trajectory, shape, density, backend, eps, trajectory_key)
    op = NufftOp(trajectory, shape, smaps=sens, density=density, backend=backend, eps=eps,
                 trajectory_key=trajectory_key)
    coil_adjoints = op.adjoint_coils(op.weighting.forward(data))
    combined = coil_adjoints[:, 0] if sens is None else (sens.conj() * coil_adjoints).sum(1)
    scale = _robust_max(combined, scale_quantile)
    raw_adjoint = combined if sens is None else coil_adjoints
    view = (-1, *([1] * (raw_adjoint.dim() - 1)))
    adjoint = (raw_adjoint / scale.reshape(view)).to(torch.complex64)
    scaled_data = data / scale.reshape(-1, 1, 1)
    kernel = op.toeplitz_kernel(weighted=True, dtype=torch.complex64)
    return NonCartesianInputs(adjoint=adjoint, kernel=kernel, smaps=sens, scale=scale, density=density,
                              data=scaled_data)


def to_network_inputs(inputs: NonCartesianInputs, kernel_per_sample: bool = False) -> tuple[torch.Tensor, ...]:
    """Real tensors in the order NC-PDNet's forward takes them: ``(adjoint, kernel[, smaps])``.

    ``adjoint [B, *S, 2]`` (single coil) or per-coil ``[B, C, *S, 2]`` (multicoil), ``kernel [*2S, 2]`` (or
    ``[B, *2S, 2]`` with ``kernel_per_sample``, the layout a dynamic-batch ONNX model takes),
    ``smaps [B, C, *S, 2]`` for multicoil; view_as_real layout.
    """
    adjoint = torch.view_as_real(inputs.adjoint).contiguous()
    kernel = torch.view_as_real(inputs.kernel).contiguous()
    if kernel_per_sample:
        kernel = kernel.unsqueeze(0).expand(adjoint.shape[0], *kernel.shape).contiguous()
    if inputs.smaps is None:
        return adjoint, kernel
    return adjoint, kernel, torch.view_as_real(inputs.smaps.contiguous()).contiguous()
