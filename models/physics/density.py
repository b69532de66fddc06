"""Density compensation weights for non-Cartesian trajectories (Pipe and Menon, MRM 1999).

Iterates ``w <- w / (C C^H w)`` with C the gridding interpolation (grid -> samples) of finufft's
"spread/interp only" mode: an exponential-of-semicircle kernel on a 2x oversampled grid, no FFT, no
deapodisation. The weights are then scaled, as NC-PDNet does, so that A^H D A of a constant image is 1 in
the image centre.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mrdserve.models.physics.nufft import nufft_adjoint, nufft_forward
from mrdserve.models.physics.nufft_cache import LruCache, trajectory_hash


def _gridding_pair(trajectory: torch.Tensor, image_shape: tuple[int, ...], kernel_eps: float) -> tuple:
    """Spread (samples -> 2N grid) and interpolate (2N grid -> samples) closures sharing one plan."""
    import finufft

    grid = tuple(2 * n for n in image_shape)
    plan = finufft.Plan(1, grid, n_trans=1, eps=kernel_eps, isign=1, dtype="complex128",
                        spreadinterponly=1, upsampfac=2.0, nthreads=torch.get_num_threads())
    points = trajectory.detach().to("cpu", torch.float64).numpy()
    plan.setpts(*[np.ascontiguousarray(row) for row in points])
    return plan.execute, plan.execute_adjoint


DENSITY_WEIGHTS = LruCache(8)  # every slice of a scan shares its trajectory: compute its weights once


def _check_trajectory(trajectory: torch.Tensor, shape: tuple[int, ...]) -> None:
    if trajectory.dim() != 2 or trajectory.shape[0] != len(shape) or trajectory.is_complex():
        raise ValueError(f"trajectory must be real ({len(shape)}, K) for image_shape {shape}, "
                         f"got {trajectory.dtype} {tuple(trajectory.shape)}")


def pipe_menon_density(trajectory: torch.Tensor, image_shape: tuple[int, ...], n_iter: int = 10,
                       device: torch.device | str | None = None, kernel_eps: float = 1e-3,
                       trajectory_key: str | None = None) -> torch.Tensor:
    """Density-compensation weights ``(K,)`` float32 for ``trajectory (d, K)`` and the given image matrix.

    ``kernel_eps`` picks the width of finufft's gridding kernel; 1e-3 flattened the PSF best in our tests.
    Results are cached per (trajectory values, shape, n_iter, kernel_eps) in ``DENSITY_WEIGHTS`` and
    returned as fresh tensors. ``trajectory_key``: ``trajectory_hash(trajectory)`` when the caller has it.
    """
    shape = tuple(int(n) for n in image_shape)
    _check_trajectory(trajectory, shape)
    if not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
    device = trajectory.device if device is None else torch.device(device)
    trajectory_key = trajectory_key or trajectory_hash(trajectory)
    key = (trajectory_key, shape, n_iter, float(kernel_eps))
    weights = DENSITY_WEIGHTS.get_or_create(
        key, lambda: _pipe_menon(trajectory, shape, n_iter, kernel_eps, trajectory_key))
    return weights.to(device=device, dtype=torch.float32, copy=True)


def _pipe_menon(trajectory: torch.Tensor, shape: tuple[int, ...], n_iter: int, kernel_eps: float,
                trajectory_key: str) -> torch.Tensor:
    """The iteration itself, then the centre normalisation; float32 on the CPU."""
    spread, interpolate = _gridding_pair(trajectory, shape, kernel_eps)
    weights = np.ones(trajectory.shape[1], dtype=np.complex128)
    for _ in range(n_iter):
        blurred = interpolate(spread(weights)).real
        weights = weights / np.maximum(blurred, 1e-12)
    weights_t = torch.from_numpy(weights.real.copy())
    weights_t = weights_t / _centre_response(trajectory, shape, weights_t, trajectory_key)
    return weights_t.to(torch.float32)


def normalise_density(weights: torch.Tensor, trajectory: torch.Tensor, image_shape: tuple[int, ...],
                      trajectory_key: str | None = None) -> torch.Tensor:
    """Rescale any density weights ``(K,)`` (e.g. an acquisition's own) so A^H D A 1 is ~1 in the image centre.

    The same normalisation as ``pipe_menon_density``, so externally supplied weights and ours agree in scale
    (the adjoint and CG-SENSE preconditioning assume it). Returns float32 on ``weights``' device.
    ``trajectory_key``: ``trajectory_hash(trajectory)`` when the caller has it.
    """
    shape = tuple(int(n) for n in image_shape)
    _check_trajectory(trajectory, shape)
    if weights.is_complex() or weights.numel() != trajectory.shape[1]:
        raise ValueError(f"density weights must be real with {trajectory.shape[1]} values (one per sample), "
                         f"got {weights.dtype} {tuple(weights.shape)}")
    flat = weights.detach().reshape(-1).to("cpu", torch.float64)
    response = _centre_response(trajectory, shape, flat, trajectory_key)
    if not response > 0:
        raise ValueError(f"density weights give a non-positive centre response ({response:.3g}); "
                         "they cannot be normalised")
    return (flat / response).to(device=weights.device, dtype=torch.float32)


def _centre_response(trajectory: torch.Tensor, shape: tuple[int, ...], weights: torch.Tensor,
                     trajectory_key: str | None) -> float:
    """Mean of A^H D A 1 over the central eighth of each axis (the part free of edge ringing)."""
    traj = trajectory.detach().to("cpu", torch.float64)
    key = trajectory_hash(traj) if trajectory_key is None else trajectory_key + "+f64"  # one hash for both NUFFTs
    ones = torch.ones((1, *shape), dtype=torch.complex128)
    response = nufft_adjoint(nufft_forward(ones, traj, eps=1e-6, traj_key=key) * weights, traj, shape, eps=1e-6,
                             traj_key=key)[0].real
    centre = response
    for axis, n in enumerate(shape):
        half = max(1, math.ceil(n / 16))
        centre = centre.narrow(axis, n // 2 - half, 2 * half)
    return float(centre.mean())
