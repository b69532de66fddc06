"""Coil sensitivities from the fully sampled k-space centre (XPDNet / E2E-VarNet style).

Low-resolution coil images from the calibration data, divided by their root-sum-of-squares: cheap,
smooth, and the same function serves training and serving. ESPIRiT (``espirit.py``) is the sharper option.
"""

from __future__ import annotations

import math

import torch

from mrdserve.models.physics.fft import ifftnc
from mrdserve.models.physics.nufft import NufftOp


def _normalise_by_rss(coil_images: torch.Tensor, eps: float) -> torch.Tensor:
    """Divide coil images ``[B, C, *spatial]`` by their RSS, floored at ``eps`` times each sample's peak."""
    rss = coil_images.abs().square().sum(dim=1, keepdim=True).sqrt()
    peak = rss.reshape(rss.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (rss.dim() - 1)))
    floor = (eps * peak).clamp_min(torch.finfo(rss.dtype).tiny)
    return coil_images / torch.maximum(rss, floor)


def _taper(length: int, taper: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Tukey window of ``length`` points: flat middle, cosine edges over ``taper`` of the length."""
    if taper <= 0 or length < 2:
        return torch.ones(length, dtype=dtype, device=device)
    position = (torch.arange(length, dtype=torch.float64, device=device) + 0.5) / length  # (0, 1)
    edge = taper / 2
    window = torch.ones(length, dtype=torch.float64, device=device)
    rising = position < edge
    falling = position > 1 - edge
    window[rising] = 0.5 * (1 - torch.cos(math.pi * position[rising] / edge))
    window[falling] = 0.5 * (1 - torch.cos(math.pi * (1 - position[falling]) / edge))
    return window.to(dtype)


def acs_window(acs_mask: torch.Tensor, spatial_shape: tuple[int, ...], taper: float) -> torch.Tensor:
    """Real window over k-space ``spatial_shape``: 1 on the ACS block, tapered at its edges, 0 elsewhere.

    Along each dimension the block spans the first to last ACS index of the mask's projection; dimensions the
    mask does not restrict (e.g. the fully sampled readout) stay flat.
    """
    n_spatial = len(spatial_shape)
    full = torch.broadcast_to(acs_mask.bool(), (*acs_mask.shape[:-n_spatial], *spatial_shape))
    full = full.reshape(-1, *spatial_shape).any(dim=0)
    window = full.to(torch.float32)
    for axis, size in enumerate(spatial_shape):
        others = [d for d in range(n_spatial) if d != axis]
        present = full.any(dim=others) if others else full
        indices = present.nonzero().flatten()
        if indices.numel() == 0:
            raise ValueError("acs_mask selects no k-space sample")
        lo, hi = int(indices[0]), int(indices[-1]) + 1
        if lo == 0 and hi == size:
            continue
        profile = torch.zeros(size, dtype=torch.float32, device=acs_mask.device)
        profile[lo:hi] = _taper(hi - lo, taper, torch.float32, acs_mask.device)
        shape = [1] * n_spatial
        shape[axis] = size
        window = window * profile.reshape(shape)
    return window


def sensitivities_from_acs(kspace: torch.Tensor, acs_mask: torch.Tensor, taper: float = 0.5,
                           eps: float = 1e-6) -> torch.Tensor:
    """Sensitivities ``[B, C, *spatial]`` (complex64) from the ACS region of k-space ``[B, C, (kz,) ky, kx]``.

    Args:
        kspace: complex multicoil k-space; only samples where ``acs_mask`` is True are used.
        acs_mask: bool mask broadcastable to k-space (e.g. ``[ky, 1]``), True on the fully sampled centre.
        taper: fraction of the ACS extent given a cosine edge (0 = box, 1 = Hann) to limit ringing.
        eps: RSS floor relative to the peak RSS, guarding the division outside the object.
    """
    if not torch.is_complex(kspace):
        raise TypeError(f"kspace must be complex, got {kspace.dtype}")
    if kspace.dim() not in (4, 5):
        raise ValueError(f"kspace must be [B, C, (kz,) ky, kx], got shape {tuple(kspace.shape)}")
    if not 0.0 <= taper <= 1.0:
        raise ValueError(f"taper must lie in [0, 1], got {taper}")
    n_spatial = kspace.dim() - 2
    acs_mask = acs_mask.to(kspace.device)
    try:
        torch.broadcast_shapes(acs_mask.shape, kspace.shape)
    except RuntimeError as error:
        raise ValueError(
            f"acs_mask shape {tuple(acs_mask.shape)} does not broadcast to kspace {tuple(kspace.shape)}"
        ) from error
    window = acs_window(acs_mask, tuple(kspace.shape[-n_spatial:]), taper)
    calib = kspace * (acs_mask.bool() * window)
    coil_images = ifftnc(calib.to(torch.complex64), n_spatial)
    return _normalise_by_rss(coil_images, eps)


def sensitivities_noncartesian(data: torch.Tensor, op: NufftOp, kmax_fraction: float = 0.1,
                               taper: float = 0.5, eps: float = 1e-6) -> torch.Tensor:
    """Sensitivities ``[B, C, *spatial]`` from non-Cartesian data ``[B, C, K]`` near the k-space centre.

    Samples with |omega| below ``kmax_fraction * pi`` are kept (cosine taper over the outer ``taper`` of
    that radius), weighted by ``op.density`` and gridded by an adjoint NUFFT over just those samples (same
    backend and accuracy as ``op``), then divided by the RSS.
    """
    if not torch.is_complex(data):
        raise TypeError(f"data must be complex, got {data.dtype}")
    if data.dim() != 3:
        raise ValueError(f"data must be [B, C, K], got shape {tuple(data.shape)}")
    if not 0.0 < kmax_fraction <= 1.0:
        raise ValueError(f"kmax_fraction must lie in (0, 1], got {kmax_fraction}")
    if not 0.0 <= taper <= 1.0:
        raise ValueError(f"taper must lie in [0, 1], got {taper}")
    trajectory = op.trajectory.to(data.device)
    if data.shape[-1] != trajectory.shape[-1]:
        raise ValueError(f"data has {data.shape[-1]} samples but the trajectory has {trajectory.shape[-1]}")
    radius = trajectory.to(torch.float64).square().sum(dim=0).sqrt() / (math.pi * kmax_fraction)
    weights = _radial_taper(radius, taper)
    if op.density is not None:
        weights = weights * op.density.to(device=data.device, dtype=torch.float64).reshape(-1).abs()
    keep = (weights > 0).nonzero().flatten()
    if keep.numel() == 0:
        raise ValueError(f"no sample lies within kmax_fraction={kmax_fraction} of the k-space centre")
    # Grid only the central samples: an operator on the low-pass subset is much cheaper than the full one.
    central = NufftOp(trajectory[:, keep], op.image_shape, backend=op.backend, eps=op.eps)
    weighted = data[..., keep] * weights[keep].to(data.real.dtype)
    coil_images = central.adjoint_coils(weighted.to(torch.complex64))
    return _normalise_by_rss(coil_images, eps).to(torch.complex64)


def _radial_taper(radius: torch.Tensor, taper: float) -> torch.Tensor:
    """1 for radius <= 1 - taper, cosine fall to 0 at radius 1, 0 beyond (radius relative to the cut-off)."""
    weights = (radius <= 1.0).to(radius.dtype)
    if taper > 0:
        start = 1.0 - taper
        edge = (radius > start) & (radius <= 1.0)
        weights[edge] = 0.5 * (1 + torch.cos(math.pi * (radius[edge] - start) / taper))
    return weights
