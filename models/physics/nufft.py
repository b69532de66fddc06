"""Non-uniform FFT (NUFFT) operators for 2D/3D non-Cartesian MRI, with interchangeable backends.

Convention (every backend, checked against a direct non-uniform DFT in the tests):

    y_k = prod(N)^(-1/2) * sum_n x_n exp(-i omega_k . (n - N//2))

with ``omega`` the ``(d, K)`` trajectory in radians/sample (row i pairs with image axis i) and the adjoint
``x_n = prod(N)^(-1/2) * sum_k y_k exp(+i omega_k . (n - N//2))``. A fully sampled Cartesian trajectory thus
gives the orthonormal centred FFT of ``models.physics.fft``. Note: torchkbnufft's ``norm="ortho"`` is NOT this
scaling; it normalises by the oversampled grid and comes out ``(grid/N)^(d/2)`` (2x in 2D) too small, so we
call it with ``norm=None`` and scale by ``prod(N)^(-1/2)`` ourselves. finufft type 2 with ``isign=-1`` and its
default mode order (index n <-> frequency n - N//2) is the forward; its Python ``setpts(x, y, z)`` pairs x
with array axis 0, so the trajectory rows are passed in order.

Backends (``nufft_backends``): "torchkbnufft" (pure torch, differentiable, any device), "finufft" (fast CPU;
differentiated through ``external_linear_map``, whose backward is the adjoint), "cufinufft" (CUDA, when
importable), "auto" (finufft on CPU, cufinufft on CUDA when present, else torchkbnufft). Gradients flow to the
data, not to the trajectory. Plans and kernels are cached per trajectory hash (``nufft_cache``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from mrdserve.models.physics.external_linear_map import apply_linear_map
from mrdserve.models.physics.kernels import combine_coils, expand_coils
from mrdserve.models.physics.linop import (
    ANY_LEADING,
    Identity,
    LinearOperator,
    Shape,
    Weighting,
    check_complex,
    check_shape,
)
from mrdserve.models.physics.nufft_backends import cufinufft_run, finufft_run, resolve_backend, torchkbnufft_run
from mrdserve.models.physics.nufft_cache import TOEPLITZ_KERNELS, tensor_hash, trajectory_hash
from mrdserve.models.physics.toeplitz import toeplitz_apply, toeplitz_kernel

# ---- functional layer ----------------------------------------------------------------------------


def _external_pair(trajectory: torch.Tensor, shape: tuple[int, ...], backend: str, eps: float,
                   traj_key: str | None) -> tuple[Callable, Callable]:
    """Forward and adjoint closures of the finufft/cufinufft backend, sharing one cache key."""
    key = traj_key or trajectory_hash(trajectory)
    run = finufft_run if backend == "finufft" else cufinufft_run
    forward = functools.partial(run, traj=trajectory, key=key, shape=shape, eps=eps, adjoint=False)
    adjoint = functools.partial(run, traj=trajectory, key=key, shape=shape, eps=eps, adjoint=True)
    return forward, adjoint


def nufft_forward(images: torch.Tensor, trajectory: torch.Tensor, backend: str = "auto", eps: float = 1e-6,
                  traj_key: str | None = None) -> torch.Tensor:
    """Images ``[..., *N]`` -> samples ``[..., K]`` (the shape N is the trailing ``d`` dims of the images).

    ``traj_key``: ``trajectory_hash(trajectory)`` when the caller has it (saves hashing the trajectory).
    """
    check_complex("images", images)
    d = trajectory.shape[0]
    shape = tuple(images.shape[-d:])
    backend = resolve_backend(backend, images.device)
    if backend == "torchkbnufft":
        return torchkbnufft_run(images, trajectory, shape, adjoint=False)
    forward, adjoint = _external_pair(trajectory, shape, backend, eps, traj_key)
    return apply_linear_map(images, forward, adjoint)


def nufft_adjoint(data: torch.Tensor, trajectory: torch.Tensor, image_shape: tuple[int, ...],
                  backend: str = "auto", eps: float = 1e-6, traj_key: str | None = None) -> torch.Tensor:
    """Samples ``[..., K]`` -> images ``[..., *image_shape]`` (the exact adjoint of ``nufft_forward``)."""
    check_complex("data", data)
    shape = tuple(int(n) for n in image_shape)
    backend = resolve_backend(backend, data.device)
    if backend == "torchkbnufft":
        return torchkbnufft_run(data, trajectory, shape, adjoint=True)
    forward, adjoint = _external_pair(trajectory, shape, backend, eps, traj_key)
    return apply_linear_map(data, adjoint, forward)


# ---- stateful operator ---------------------------------------------------------------------------


class NufftOp(LinearOperator):
    """Multicoil non-Cartesian operator A = F_nu S bound to a trajectory, sensitivities and density weights.

    ``forward``/``adjoint``/``normal`` are A, A^H and A^H A (``normal`` through the Toeplitz kernel), whatever
    the density. The density weights D are the operator ``weighting``; the density-compensated forms are
    explicit: ``weighted_adjoint(y) = A^H D y`` and ``weighted_normal(x) = A^H D A x`` (the Toeplitz form of
    ``(op.H @ op.weighting @ op)(x)``).

    Args:
        trajectory: ``(d, K)`` float tensor in radians/sample, d = len(image_shape) (2 or 3).
        image_shape: spatial matrix ``(y, x)`` or ``(z, y, x)``.
        smaps: complex sensitivities ``[B, C, *image_shape]``; None means a single coil of ones.
        density: ``(K,)`` non-negative density-compensation weights D; None means ones.
        backend: "auto", "torchkbnufft", "finufft" or "cufinufft" (see the module docstring).
        eps: requested NUFFT accuracy (finufft/cufinufft).
        trajectory_key: ``trajectory_hash(trajectory)`` when the caller has it (e.g.
            ``KSpaceSample.trajectory_key``); otherwise it is computed on first use.
    """

    def __init__(self, trajectory: torch.Tensor, image_shape: tuple[int, ...],
                 smaps: torch.Tensor | None = None, density: torch.Tensor | None = None,
                 backend: str = "auto", eps: float = 1e-6, trajectory_key: str | None = None) -> None:
        if not isinstance(trajectory, torch.Tensor) or trajectory.is_complex() or trajectory.dim() != 2:
            raise TypeError("trajectory must be a real (d, K) tensor")
        self.image_shape = tuple(int(n) for n in image_shape)
        d = len(self.image_shape)
        if d not in (2, 3) or any(n < 1 for n in self.image_shape):
            raise ValueError(f"image_shape must hold 2 or 3 positive sizes, got {image_shape!r}")
        if trajectory.shape[0] != d:
            raise ValueError(f"trajectory has {trajectory.shape[0]} rows but image_shape has {d} dimensions")
        if smaps is not None:
            check_complex("smaps", smaps)
            if smaps.dim() != d + 2 or tuple(smaps.shape[2:]) != self.image_shape:
                raise ValueError(f"smaps must be [B, C, *{self.image_shape}], got {tuple(smaps.shape)}")
        if density is not None:
            if density.is_complex() or density.shape != (trajectory.shape[1],):
                raise ValueError(f"density must be real of shape ({trajectory.shape[1]},), "
                                 f"got {density.dtype} {tuple(density.shape)}")
            density = density.to(trajectory.device)
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.trajectory = trajectory
        self.smaps = smaps
        self.density = density
        self.eps = float(eps)
        self.backend = resolve_backend(backend, trajectory.device)
        self._trajectory_key = trajectory_key
        self._density_key: str | None = None

    @property
    def trajectory_key(self) -> str:
        """``trajectory_hash(trajectory)``: as given to the constructor, else computed once on first use."""
        if self._trajectory_key is None:
            self._trajectory_key = trajectory_hash(self.trajectory)
        return self._trajectory_key

    @property
    def n_samples(self) -> int:
        return int(self.trajectory.shape[1])

    @property
    def domain_shape(self) -> Shape:
        return ("B", *self.image_shape)

    @property
    def range_shape(self) -> Shape:
        coils: int | str = "C" if self.smaps is None else int(self.smaps.shape[1])
        return ("B", coils, self.n_samples)

    @property
    def coil_shape(self) -> Shape:
        """Shape of the coil images ``forward_coils`` takes."""
        return ("B", "C", *self.image_shape)

    @property
    def weighting(self) -> LinearOperator:
        """The density weights D as a diagonal operator on the samples (the identity without density)."""
        if self.density is None:
            return Identity((ANY_LEADING, self.n_samples))
        return Weighting(self.density, name="density")

    def forward_coils(self, coil_images: torch.Tensor) -> torch.Tensor:
        """Coil images ``[B, C, *shape]`` -> samples ``[B, C, K]``."""
        check_complex("coil_images", coil_images)
        check_shape("coil_images", coil_images, self.coil_shape)
        return nufft_forward(coil_images, self.trajectory, self.backend, self.eps, self.trajectory_key)

    def adjoint_coils(self, data: torch.Tensor) -> torch.Tensor:
        """Samples ``[B, C, K]`` -> coil images ``[B, C, *shape]`` (no density weights)."""
        check_complex("data", data)
        check_shape("data", data, ("B", "C", self.n_samples))
        return nufft_adjoint(data, self.trajectory, self.image_shape, self.backend, self.eps,
                             self.trajectory_key)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``[B, *shape]`` -> multicoil samples ``[B, C, K]`` (= forward_coils(smaps * image))."""
        check_complex("image", image)
        self.check_domain(image, "image")
        coils = image.unsqueeze(1) if self.smaps is None else expand_coils(image.unsqueeze(1), self.smaps)
        return self.forward_coils(coils)

    def adjoint(self, data: torch.Tensor) -> torch.Tensor:
        """Samples ``[B, C, K]`` -> coil-combined image ``[B, *shape]``: A^H y (no density weights)."""
        check_complex("data", data)
        self.check_range(data, "data")
        coils = self.adjoint_coils(data)
        return coils.sum(1) if self.smaps is None else combine_coils(coils, self.smaps).squeeze(1)

    def weighted_adjoint(self, data: torch.Tensor) -> torch.Tensor:
        """A^H D y: the density-compensated adjoint (``adjoint(weighting(data))``)."""
        return self.adjoint(self.weighting.forward(data))

    def toeplitz_kernel(self, *, weighted: bool, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
        """Toeplitz kernel of A^H D A (``weighted``) or A^H A on the 2N grid, cached per trajectory/shape/weights."""
        weights = self.density if weighted else None
        if weights is not None and self._density_key is None:
            self._density_key = tensor_hash(weights)
        key = (self.trajectory_key, self.image_shape, None if weights is None else self._density_key, dtype,
               str(self.trajectory.device), self.eps)

        def make() -> torch.Tensor:
            return toeplitz_kernel(self.trajectory, self.image_shape, weights=weights,
                                   device=self.trajectory.device, dtype=dtype, eps=self.eps,
                                   traj_key=self.trajectory_key)

        kernel: torch.Tensor = TOEPLITZ_KERNELS.get_or_create(key, make)
        return kernel

    def _toeplitz_normal(self, image: torch.Tensor, weighted: bool) -> torch.Tensor:
        check_complex("image", image)
        self.check_domain(image, "image")
        kernel = self.toeplitz_kernel(weighted=weighted, dtype=image.dtype)
        if self.smaps is None:
            return toeplitz_apply(image, kernel)
        coils = toeplitz_apply(expand_coils(image.unsqueeze(1), self.smaps), kernel)
        return combine_coils(coils, self.smaps).squeeze(1)

    def normal(self, image: torch.Tensor) -> torch.Tensor:
        """A^H A x through the Toeplitz kernel (FFTs and pointwise products only); no density weights."""
        return self._toeplitz_normal(image, weighted=False)

    def weighted_normal(self, image: torch.Tensor) -> torch.Tensor:
        """A^H D A x through the Toeplitz kernel with the density inside (A^H A x without density)."""
        return self._toeplitz_normal(image, weighted=True)
