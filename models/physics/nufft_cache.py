"""Per-trajectory caches of the NUFFT and Toeplitz operators, and the value hashes that key them.

A trajectory is identified by the SHA-1 of its dtype, shape and bytes (``trajectory_hash``), never by object
identity: every slice of a scan shares its trajectory values, so plans, kernels and density weights are computed
once. Hashing costs a pass over the samples; compute a trajectory's key once (e.g.
``KSpaceSample.trajectory_key``) and pass it on (``trajectory_key=`` / ``traj_key=``).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch


class LruCache:
    """A small thread-safe least-recently-used cache for per-trajectory work (plans, kernels, modules)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_create(self, key: Hashable, factory: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = factory()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


FINUFFT_PLANS = LruCache(8)  # finufft and cufinufft plans with their points set
TORCHKBNUFFT_MODULES = LruCache(8)  # torchkbnufft forward/adjoint modules per shape, dtype and device
TOEPLITZ_KERNELS = LruCache(4)  # NufftOp Toeplitz kernels per trajectory, shape, weights, dtype and device


def tensor_hash(tensor: torch.Tensor) -> str:
    """SHA-1 of a tensor's dtype, shape and bytes: a cache key independent of object identity."""
    data = tensor.detach().to("cpu").contiguous()
    digest = hashlib.sha1(f"{data.dtype}{tuple(data.shape)}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def trajectory_hash(traj: torch.Tensor) -> str:
    """Stable hash of a trajectory's values (dtype, shape and bytes) for caching per-trajectory work."""
    return tensor_hash(traj)
