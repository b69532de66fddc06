"""Preparation of Cartesian k-space for the networks (XPDNet, PDNet): one function for training and serving.

``prepare_cartesian`` masks and scales the k-space, estimates sensitivities and returns a ``CartesianInputs``
whose ``to_network_inputs`` gives the real tensors an exported network takes, in its argument order.
Scaling: k-space is divided by ``scale``, the 99th percentile of the magnitude of the zero-filled
SENSE-combined image (A^H y), so network inputs are O(1); multiply the network output by ``scale``
(``restore_scale``) to get back to the data's units. Cropping to the recon matrix is the caller's job
(``models.data.baseline.center_crop``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mrdserve.models.physics.espirit import espirit
from mrdserve.models.physics.sense import sense_adjoint
from mrdserve.models.physics.sensitivities import sensitivities_from_acs

SENSITIVITY_METHODS = ("acs", "espirit", "ones")
SCALE_QUANTILE = 0.99


@dataclass
class CartesianInputs:
    """Prepared Cartesian inputs: complex64 scaled k-space ``[B, C, ky, kx]``, bool mask ``[B, 1, ky, kx]``,
    complex64 sensitivities ``[B, C, ky, kx]`` and the per-sample ``scale`` ``[B]`` the k-space was divided by."""

    kspace: torch.Tensor
    mask: torch.Tensor
    smaps: torch.Tensor
    scale: torch.Tensor

    def to_network_inputs(self, with_smaps: bool = True) -> tuple[torch.Tensor, ...]:
        """Real tensors in the exported networks' order: k-space ``[B, C, ky, kx, 2]``, mask ``[B, 1, ky, kx]``
        float and, unless ``with_smaps`` is False (single-coil PDNet), sensitivities ``[B, C, ky, kx, 2]``."""
        kspace = torch.view_as_real(self.kspace).contiguous()
        mask = self.mask.to(kspace.dtype)
        if not with_smaps:
            return kspace, mask
        return kspace, mask, torch.view_as_real(self.smaps).contiguous()

    def restore_scale(self, image: torch.Tensor) -> torch.Tensor:
        """Network output ``[B, ...]`` back in the data's units (multiplied by ``scale``)."""
        scale = self.scale.to(image.device)
        return image * scale.reshape(-1, *([1] * (image.dim() - 1))).to(image.dtype)


def prepare_cartesian(kspace: torch.Tensor, mask: torch.Tensor, acs_mask: torch.Tensor | None = None,
                      sensitivities: str | torch.Tensor = "acs", scale: torch.Tensor | float | None = None,
                      device: torch.device | str | None = None) -> CartesianInputs:
    """Prepare Cartesian 2D k-space ``[C, ky, kx]`` or ``[B, C, ky, kx]`` (complex) for a network.

    Args:
        kspace: complex multicoil (or single-coil, C = 1) k-space; samples outside ``mask`` are zeroed.
        mask: bool sampling mask broadcastable to ``[B, 1, ky, kx]`` (e.g. ``[ky, 1]``); a 1D mask is over ky.
        acs_mask: bool calibration mask (same rules); None takes the contiguous run of fully sampled ky lines
            around the centre line ky // 2 of ``mask``.
        sensitivities: "acs" (low-resolution ACS estimate), "espirit", "ones", or complex maps ``[(B,) C, ky, kx]``.
            Single-coil data always get maps of ones unless maps are given.
        scale: divide the k-space by this instead of the computed robust maximum (e.g. to reuse a scale).
        device: where the outputs live; defaults to the k-space's device.
    """
    if not isinstance(kspace, torch.Tensor) or not torch.is_complex(kspace):
        raise TypeError(f"kspace must be a complex tensor, got {getattr(kspace, 'dtype', type(kspace))}")
    if kspace.dim() == 3:
        kspace = kspace.unsqueeze(0)
    if kspace.dim() != 4:
        raise ValueError(f"kspace must be [C, ky, kx] or [B, C, ky, kx], got shape {tuple(kspace.shape)}")
    device = torch.device(device) if device is not None else kspace.device
    kspace = kspace.to(device=device, dtype=torch.complex64)
    n_batch, _, n_ky, n_kx = kspace.shape
    mask = _batch_mask(mask, "mask", n_batch, n_ky, n_kx, device)
    if not bool(mask.any()):
        raise ValueError("mask selects no k-space sample")
    kspace = kspace * mask
    smaps = _sensitivities(kspace, mask, acs_mask, sensitivities, device)
    if scale is None:
        scale_tensor = robust_scale(sense_adjoint(kspace, smaps, mask))
    else:
        scale_tensor = torch.as_tensor(scale, dtype=torch.float32, device=device).reshape(-1)
        scale_tensor = scale_tensor.expand(n_batch).clone()
        if not bool((scale_tensor > 0).all()):
            raise ValueError(f"scale must be positive, got {scale}")
    kspace = kspace / scale_tensor.reshape(-1, 1, 1, 1)
    return CartesianInputs(kspace=kspace, mask=mask, smaps=smaps, scale=scale_tensor)


def robust_scale(image: torch.Tensor) -> torch.Tensor:
    """Per-sample ``SCALE_QUANTILE`` quantile of |image| ``[B, ...]`` -> ``[B]`` float32 (1 where it is 0)."""
    magnitude = image.abs().reshape(image.shape[0], -1).to(torch.float32)
    scale = torch.quantile(magnitude, SCALE_QUANTILE, dim=1)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def acs_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, 1, ky, 1]``: the contiguous run of fully sampled ky lines around ky // 2, per sample."""
    lines = mask.all(dim=-1)[:, 0]  # [B, ky]
    n_ky = lines.shape[-1]
    centre = n_ky // 2
    acs = torch.zeros_like(lines)
    for index in range(lines.shape[0]):
        if not bool(lines[index, centre]):
            raise ValueError("mask does not sample the centre ky line; pass acs_mask or sensitivities='ones'")
        lo, hi = centre, centre + 1
        while lo > 0 and bool(lines[index, lo - 1]):
            lo -= 1
        while hi < n_ky and bool(lines[index, hi]):
            hi += 1
        acs[index, lo:hi] = True
    return acs[:, None, :, None]


def _batch_mask(mask: torch.Tensor, name: str, n_batch: int, n_ky: int, n_kx: int,
                device: torch.device) -> torch.Tensor:
    """Broadcast a user mask to bool ``[B, 1, ky, kx]`` (1D masks are over ky)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(mask).__name__}")
    if mask.is_complex() or (mask.is_floating_point() and not bool(((mask == 0) | (mask == 1)).all())):
        raise ValueError(f"{name} must be boolean (or 0/1 valued), got dtype {mask.dtype}")
    if mask.dim() == 1:
        mask = mask.reshape(-1, 1)
    if mask.dim() > 4:
        raise ValueError(f"{name} has {mask.dim()} dimensions; it must broadcast to [B, 1, ky, kx]")
    target = (n_batch, 1, n_ky, n_kx)
    try:
        expanded = torch.broadcast_to(mask.to(device).bool(), target)
    except RuntimeError as error:
        raise ValueError(f"{name} shape {tuple(mask.shape)} does not broadcast to [B, 1, ky, kx] = {target}") \
            from error
    return expanded.clone()


def _sensitivities(kspace: torch.Tensor, mask: torch.Tensor, acs_mask: torch.Tensor | None,
                   method: str | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Complex64 maps ``[B, C, ky, kx]`` by ``method`` (see ``prepare_cartesian``)."""
    n_batch, n_coils = kspace.shape[:2]
    if isinstance(method, torch.Tensor):
        smaps = method.to(device)
        if not torch.is_complex(smaps):
            raise TypeError(f"sensitivities must be complex, got {smaps.dtype}")
        if smaps.dim() == 3:
            smaps = smaps.unsqueeze(0)
        if smaps.dim() != 4 or smaps.shape[1:] != kspace.shape[1:] or smaps.shape[0] not in (1, n_batch):
            raise ValueError(f"sensitivities shape {tuple(method.shape)} does not match kspace "
                             f"{tuple(kspace.shape)}")
        return smaps.to(torch.complex64).expand(n_batch, -1, -1, -1).contiguous()
    if method not in SENSITIVITY_METHODS:
        raise ValueError(f"sensitivities must be a tensor or one of {SENSITIVITY_METHODS}, got {method!r}")
    if method == "ones" or n_coils == 1:
        return torch.ones_like(kspace)
    if acs_mask is None:
        acs = acs_from_mask(mask)
    else:
        n_ky, n_kx = kspace.shape[-2:]
        acs = _batch_mask(acs_mask, "acs_mask", n_batch, n_ky, n_kx, device)
        if not bool(acs.any()):
            raise ValueError("acs_mask selects no k-space sample")
    if method == "espirit":
        return torch.cat([espirit(kspace[i:i + 1], acs[i:i + 1]) for i in range(n_batch)]).to(torch.complex64)
    return sensitivities_from_acs(kspace, acs)
