"""The NUFFT backends behind ``models.physics.nufft``: finufft (CPU), cufinufft (CUDA) and torchkbnufft (any device).

Each ``*_run`` maps images ``[..., *shape]`` to samples ``[..., K]`` (``adjoint=False``) or back, in the
convention of ``models.physics.nufft`` (orthonormal ``prod(N)^-1/2`` scaling, trajectory rows paired with image
axes in order), batching the leading dimensions into one call. Plans and modules are cached in
``models.physics.nufft_cache``, keyed by the trajectory's hash.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import torch

from mrdserve.models.physics.nufft_cache import FINUFFT_PLANS, TORCHKBNUFFT_MODULES

BACKENDS = ("auto", "torchkbnufft", "finufft", "cufinufft")
# torchkbnufft's default table (2^10 points per unit) limits it to ~7e-4 relative error at any numpoints;
# 2^14 gives ~5e-5 at the same speed (measured at 320^2, radial 100 x 640).
TORCHKBNUFFT_TABLE_OVERSAMP = 2**14
# finufft cannot reach below float32 machine precision in single precision (it warns and raises eps).
SINGLE_PRECISION_EPS_FLOOR = 2e-7


def cufinufft_available() -> bool:
    try:
        import cufinufft  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """Map "auto" to a concrete backend for ``device``; reject unknown names."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    is_cuda = torch.device(device).type == "cuda"
    if backend == "auto":
        if not is_cuda:
            return "finufft"
        return "cufinufft" if cufinufft_available() else "torchkbnufft"
    if backend == "finufft" and is_cuda:
        raise ValueError("backend 'finufft' runs on CPU only; use 'cufinufft' or 'torchkbnufft' for CUDA")
    if backend == "cufinufft" and not is_cuda:
        raise ValueError("backend 'cufinufft' needs CUDA tensors")
    return backend


def _batch_of(x: torch.Tensor, shape: tuple[int, ...], adjoint: bool) -> tuple[int, ...]:
    """The leading (batched) dimensions of backend input ``x``."""
    return tuple(x.shape[:-1]) if adjoint else tuple(x.shape[:-len(shape)])


# ---- finufft (CPU) -------------------------------------------------------------------------------


def _finufft_plan(traj: torch.Tensor, key: str, shape: tuple[int, ...], n_trans: int, eps: float,
                  dtype: torch.dtype) -> tuple[Any, threading.Lock]:
    """Type-2 plan (forward; ``execute_adjoint`` gives the adjoint) with points set, cached per key."""
    import finufft

    nthreads = torch.get_num_threads()
    np_dtype = "complex128" if dtype == torch.complex128 else "complex64"
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    if dtype != torch.complex128:
        eps = max(eps, SINGLE_PRECISION_EPS_FLOOR)

    def make() -> tuple[Any, threading.Lock]:
        plan = finufft.Plan(2, shape, n_trans=n_trans, eps=eps, isign=-1, dtype=np_dtype, nthreads=nthreads)
        points = traj.detach().to("cpu", real).numpy()
        plan.setpts(*[np.ascontiguousarray(row) for row in points])
        return plan, threading.Lock()

    return FINUFFT_PLANS.get_or_create((key, shape, n_trans, eps, np_dtype, nthreads), make)


def finufft_run(x: torch.Tensor, traj: torch.Tensor, key: str, shape: tuple[int, ...], eps: float,
                adjoint: bool) -> torch.Tensor:
    """finufft type 2 (forward) or its adjoint on CPU; not differentiable by itself (see ``nufft``)."""
    batch = _batch_of(x, shape, adjoint)
    n_trans = math.prod(batch)
    plan, lock = _finufft_plan(traj, key, shape, n_trans, eps, x.dtype)
    tail = (x.shape[-1],) if adjoint else shape
    array = x.detach().resolve_conj().to("cpu").reshape(n_trans, *tail).contiguous().numpy()
    with lock:
        out = plan.execute_adjoint(array) if adjoint else plan.execute(array)
    out *= 1.0 / math.sqrt(math.prod(shape))
    out_tail = shape if adjoint else (traj.shape[1],)
    return torch.from_numpy(out).reshape(*batch, *out_tail).to(x.device)


# ---- cufinufft (CUDA; guarded, not exercised on CPU-only machines) -------------------------------


def cufinufft_run(x: torch.Tensor, traj: torch.Tensor, key: str, shape: tuple[int, ...], eps: float,
                  adjoint: bool) -> torch.Tensor:
    """cufinufft type 2 (forward) or type 1 (adjoint) on the tensors' CUDA device."""
    import cufinufft

    d = len(shape)
    batch = _batch_of(x, shape, adjoint)
    n_trans = math.prod(batch)
    real = torch.float64 if x.dtype == torch.complex128 else torch.float32
    np_dtype = "complex128" if x.dtype == torch.complex128 else "complex64"
    nufft_type = 1 if adjoint else 2

    def make() -> Any:
        plan = cufinufft.Plan(nufft_type, shape, n_trans=n_trans, eps=eps, isign=1 if adjoint else -1,
                              dtype=np_dtype, gpu_device_id=x.device.index or 0)
        rows = [traj[i].detach().to(x.device, real).contiguous() for i in range(d)]
        plan.setpts(*rows)
        return plan, rows  # keep the point arrays alive with the plan

    plan, _ = FINUFFT_PLANS.get_or_create(("cuda", key, shape, n_trans, eps, np_dtype, nufft_type,
                                           str(x.device)), make)
    tail = (x.shape[-1],) if adjoint else shape
    out = plan.execute(x.detach().resolve_conj().reshape(n_trans, *tail).contiguous())
    out = torch.as_tensor(out, device=x.device) / math.sqrt(math.prod(shape))
    return out.reshape(*batch, *(shape if adjoint else (traj.shape[1],)))


# ---- torchkbnufft (any device, differentiable) ---------------------------------------------------


def _torchkbnufft_modules(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> tuple:
    import torchkbnufft as tkbn

    def make() -> tuple:
        options = {"im_size": shape, "table_oversamp": TORCHKBNUFFT_TABLE_OVERSAMP, "dtype": dtype,
                   "device": device}
        forward = tkbn.KbNufft(**options)
        adjoint = tkbn.KbNufftAdjoint(**options)
        return forward, adjoint

    return TORCHKBNUFFT_MODULES.get_or_create((shape, dtype, str(device)), make)


def torchkbnufft_run(x: torch.Tensor, traj: torch.Tensor, shape: tuple[int, ...],
                     adjoint: bool) -> torch.Tensor:
    """torchkbnufft forward or adjoint (``norm=None``, scaled here to the orthonormal convention)."""
    batch = _batch_of(x, shape, adjoint)
    n_trans = math.prod(batch)
    forward_op, adjoint_op = _torchkbnufft_modules(shape, x.dtype, x.device)
    omega = traj.to(x.device, x.real.dtype)
    scale = 1.0 / math.sqrt(math.prod(shape))
    if adjoint:
        out = adjoint_op(x.reshape(1, n_trans, x.shape[-1]), omega) * scale
        return out.reshape(*batch, *shape)
    out = forward_op(x.reshape(1, n_trans, *shape), omega) * scale
    return out.reshape(*batch, traj.shape[1])
