"""NC-PDNet: density-compensated unrolled network for 2D/3D non-Cartesian MRI (Ramzi et al., IEEE TMI 2022).

Primal-only unrolling with a buffer of ``n_primal`` image iterates, all initialised with the
density-compensated adjoint ``A^H D y`` (as the reference implementation does). Each iteration computes the
gradient ``A^H D (A x_1 - y) = A^H D A x_1 - A^H D y`` with the Toeplitz kernel (D inside) and updates the
buffer with a small CNN on ``[buffer, gradient]`` (real and imaginary parts as channels), residually. The
output is the magnitude of the first buffer image.

Exported form: ``forward(adjoint, kernel, smaps (multicoil only)) -> [B, *S]``. Single coil: ``adjoint
[B, *S, 2]`` = A^H D y. Multicoil: ``adjoint [B, C, *S, 2]`` = the per-coil A_c^H D y_c, uncombined, and
``smaps [B, C, *S, 2]``; the network combines them with its own (possibly refined) maps, ``x0 = sum_c
conj(S_c) adjoint_c``, and uses the same maps in ``A^H D A``, so with ``refine_sensitivities`` the gradient
``A^H D A x - x0`` is exactly the reference ``A^H D (A x - y)`` with refined maps. ``kernel`` is either
``[*2S, 2]``, shared by the batch (slices of one trajectory), or ``[B, *2S, 2]``, one per sample (different
trajectories in one batch, and the layout the dynamic-batch ONNX export uses). Only FFTs, convolutions and
pointwise ops inside, so it scripts and exports to ONNX. ``forward_nufft`` is the reference form with the
same weights that applies the NUFFT every iteration (training ablations, checks); the two agree with and
without refinement.

``prior="learnlets"`` (2D only) replaces each iteration's CNN by ``LearnletsCorrection``: the same residual update
of the buffer, computed by ``LearnletsPrior`` (models.nets.learnlets) from the same [buffer, gradient] channels:
1x1 convolutions around Learnlets that denoise each mixed channel with its own learned noise level, initially one
proximal gradient step ``x <- D(x - step * gradient)`` per buffer image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mrdserve.models.nets.complex import channels_to_complex, complex_to_channels, magnitude, real_to_complex
from mrdserve.models.nets.learnlets import LearnletsPrior
from mrdserve.models.physics.kernels import (
    combine_coils,
    combine_coils_channels,
    expand_coils,
    expand_coils_channels,
    toeplitz_product,
    toeplitz_product_channels,
)

if TYPE_CHECKING:
    from mrdserve.models.physics.nufft import NufftOp


class ImageCorrection(nn.Module):
    """conv3x3(f)-ReLU-conv3x3(f)-ReLU-conv3x3(2 n_primal) on [buffer, gradient]; residual on the buffer."""

    def __init__(self, n_primal: int, n_filters: int, n_dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if n_dims == 2 else nn.Conv3d
        self.n_primal = n_primal
        self.layers = nn.Sequential(
            conv(2 * (n_primal + 1), n_filters, 3, padding=1),
            nn.ReLU(),
            conv(n_filters, n_filters, 3, padding=1),
            nn.ReLU(),
            conv(n_filters, 2 * n_primal, 3, padding=1),
        )

    def forward(self, buffer: torch.Tensor, gradient_re: torch.Tensor, gradient_im: torch.Tensor) -> torch.Tensor:
        """Real channel ``buffer [B, 2 n_primal, *S]`` (real parts, then imaginary) -> updated buffer."""
        n = self.n_primal
        stacked = torch.cat([buffer[:, :n], gradient_re.unsqueeze(1), buffer[:, n:], gradient_im.unsqueeze(1)],
                            dim=1)
        return buffer + self.layers(stacked)


class LearnletsCorrection(nn.Module):
    """``ImageCorrection`` with ``LearnletsPrior(2 (n_primal + 1), 2 n_primal, **learnlets)`` as the update (2D)."""

    def __init__(self, n_primal: int, learnlets: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.n_primal = n_primal
        self.prior = LearnletsPrior(2 * (n_primal + 1), 2 * n_primal, **(learnlets or {}))

    def forward(self, buffer: torch.Tensor, gradient_re: torch.Tensor, gradient_im: torch.Tensor) -> torch.Tensor:
        """Real channel ``buffer [B, 2 n_primal, y, x]`` (real parts, then imaginary) -> updated buffer."""
        n = self.n_primal
        stacked = torch.cat([buffer[:, :n], gradient_re.unsqueeze(1), buffer[:, n:], gradient_im.unsqueeze(1)],
                            dim=1)
        return buffer + self.prior(stacked)


PRIORS = ("cnn", "learnlets")


class NCPDNet(nn.Module):
    """NC-PDNet; defaults are the 2D paper setup (10 iterations, buffer 5, 32 filters: 156,260 parameters).

    Args:
        n_dims: 2 or 3 spatial dimensions (3D uses Conv3d; the paper uses n_iter 6, n_primal 2, 16 filters,
            see ``ncpdnet_3d``).
        multicoil: take sensitivities and use ``sum_c conj(S_c) T(S_c x)`` as the normal operator.
        refine_sensitivities: refine the maps with the small ``SensitivityRefiner`` (multicoil only).
        prior: the image nets, "cnn" (``ImageCorrection`` with ``n_filters``) or "learnlets"
            (``LearnletsCorrection(n_primal, learnlets)``, 2D only).
        learnlets: keyword arguments of ``LearnletsPrior`` when ``prior="learnlets"``.
    """

    def __init__(self, n_iter: int = 10, n_primal: int = 5, n_filters: int = 32, n_dims: int = 2,
                 multicoil: bool = False, refine_sensitivities: bool = False, prior: str = "cnn",
                 learnlets: dict[str, Any] | None = None) -> None:
        super().__init__()
        if n_dims not in (2, 3):
            raise ValueError(f"n_dims must be 2 or 3, got {n_dims!r}")
        for name, value in (("n_iter", n_iter), ("n_primal", n_primal), ("n_filters", n_filters)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if refine_sensitivities and not multicoil:
            raise ValueError("refine_sensitivities needs multicoil=True")
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        if prior == "learnlets" and n_dims != 2:
            raise ValueError("prior='learnlets' is 2D only (Learnlets are a 2D filter bank); use n_dims=2")
        if learnlets is not None and prior != "learnlets":
            raise ValueError("learnlets (keyword arguments) needs prior='learnlets'")
        self.n_iter = n_iter
        self.n_primal = n_primal
        self.n_dims = n_dims
        self.multicoil = multicoil
        self.refine_sensitivities = refine_sensitivities
        if prior == "learnlets":
            self.image_nets = nn.ModuleList(LearnletsCorrection(n_primal, learnlets) for _ in range(n_iter))
        else:
            self.image_nets = nn.ModuleList(ImageCorrection(n_primal, n_filters, n_dims) for _ in range(n_iter))
        if refine_sensitivities:
            from mrdserve.models.nets.sensitivity_refiner import SensitivityRefiner

            self.refiner: nn.Module = SensitivityRefiner(preset="small", dim=n_dims)
        else:
            self.refiner = nn.Identity()

    @torch.jit.unused
    def _tracing_for_export(self) -> bool:
        """True while torch.export / torch.compile / the ONNX exporter traces the network (eager: False)."""
        return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()

    def _normal_complex(self, re: torch.Tensor, im: torch.Tensor, kernel: torch.Tensor,
                        smaps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``_normal`` with complex tensors throughout: the FFT zero-pads (``s=``) and complex products replace
        the real-arithmetic form, about half the full-size memory passes (eager and TorchScript)."""
        spectrum_kernel = torch.view_as_complex(kernel.contiguous())
        image = torch.complex(re, im)
        if smaps is None:
            result = toeplitz_product(image, spectrum_kernel, self.n_dims)
            return result.real, result.imag
        coil_maps = torch.view_as_complex(smaps.contiguous())
        if kernel.dim() == self.n_dims + 2:  # one kernel per sample: broadcast over coils
            spectrum_kernel = spectrum_kernel.unsqueeze(1)
        coils = toeplitz_product(expand_coils(image.unsqueeze(1), coil_maps), spectrum_kernel, self.n_dims)
        result = combine_coils(coils, coil_maps).squeeze(1)
        return result.real, result.imag

    def _normal(self, re: torch.Tensor, im: torch.Tensor, kernel: torch.Tensor,
                smaps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A^H D A of the image ``re + i im [B, *S]``; real ``kernel [(B,) *2S, 2]``, ``smaps [B, C, *S, 2]``.

        Eager and TorchScript use complex arithmetic (``_normal_complex``); under export tracing the real form
        below runs, since the ONNX exporter handles complex FFTs but not complex padding or products.
        """
        if torch.jit.is_scripting():  # noqa: SIM108 -- TorchScript skips the else branch only in this if form
            use_complex = True
        else:
            use_complex = not self._tracing_for_export()
        if use_complex:
            return self._normal_complex(re, im, kernel, smaps)
        kernel_re = kernel[..., 0]
        kernel_im = kernel[..., 1]
        if smaps is None:
            return toeplitz_product_channels(re, im, kernel_re, kernel_im, self.n_dims)
        if kernel.dim() == self.n_dims + 2:  # one kernel per sample: broadcast over coils
            kernel_re = kernel_re.unsqueeze(1)
            kernel_im = kernel_im.unsqueeze(1)
        s_re = smaps[..., 0]
        s_im = smaps[..., 1]
        coils_re, coils_im = expand_coils_channels(re.unsqueeze(1), im.unsqueeze(1), s_re, s_im)
        coils_re, coils_im = toeplitz_product_channels(coils_re, coils_im, kernel_re, kernel_im, self.n_dims)
        combined_re, combined_im = combine_coils_channels(coils_re, coils_im, s_re, s_im)
        return combined_re[:, 0], combined_im[:, 0]

    def _check_inputs(self, adjoint: torch.Tensor, kernel: torch.Tensor, smaps: torch.Tensor | None) -> None:
        if kernel.dim() not in (self.n_dims + 1, self.n_dims + 2) or kernel.shape[-1] != 2:
            raise ValueError(f"kernel must be real [*2S, 2] or [B, *2S, 2] with {self.n_dims} spatial dims")
        if self.multicoil:
            if smaps is None:
                raise ValueError("smaps is required by a multicoil NC-PDNet")
            if smaps.dim() != self.n_dims + 3 or smaps.shape[-1] != 2:
                raise ValueError(f"smaps must be real [B, C, *S, 2] with {self.n_dims} spatial dims")
            if adjoint.dim() != self.n_dims + 3 or adjoint.shape[-1] != 2:
                raise ValueError(f"adjoint must be the real per-coil [B, C, *S, 2] with {self.n_dims} spatial dims")
        else:
            if smaps is not None:
                raise ValueError("a single-coil NC-PDNet takes no smaps")
            if adjoint.dim() != self.n_dims + 2 or adjoint.shape[-1] != 2:
                raise ValueError(f"adjoint must be real [B, *S, 2] with {self.n_dims} spatial dims")

    def forward(self, adjoint: torch.Tensor, kernel: torch.Tensor,
                smaps: torch.Tensor | None = None) -> torch.Tensor:
        """Magnitude ``[B, *S]`` from the prepared real ``adjoint`` (per coil when multicoil), ``kernel`` and
        (multicoil) ``smaps``."""
        self._check_inputs(adjoint, kernel, smaps)
        adjoint_re = adjoint[..., 0]
        adjoint_im = adjoint[..., 1]
        if smaps is not None:
            smaps = self.refiner(smaps)
            combined_re, combined_im = combine_coils_channels(adjoint_re, adjoint_im, smaps[..., 0], smaps[..., 1])
            adjoint_re, adjoint_im = combined_re[:, 0], combined_im[:, 0]
        n = self.n_primal
        buffer = torch.stack([adjoint_re] * n + [adjoint_im] * n, dim=1)
        for image_net in self.image_nets:
            normal_re, normal_im = self._normal(buffer[:, 0], buffer[:, n], kernel, smaps)
            buffer = image_net(buffer, normal_re - adjoint_re, normal_im - adjoint_im)
        return torch.sqrt(buffer[:, 0] * buffer[:, 0] + buffer[:, n] * buffer[:, n])

    def forward_nufft(self, data: torch.Tensor, op: NufftOp) -> torch.Tensor:
        """Reference form: gradient ``A^H D (A x_1 - data)`` by NUFFTs each iteration (same weights; no export).

        ``data`` is complex ``[B, C, K]`` (scaled as the preparation scales it); ``op`` carries the trajectory,
        density and, for multicoil, complex sensitivities ``[B, C, *S]``. Refined maps (when asked) serve every
        NUFFT here, initial adjoint included, as in the reference implementation.
        """
        from mrdserve.models.physics.nufft import NufftOp

        if self.multicoil and op.smaps is None:
            raise ValueError("op.smaps is required by a multicoil NC-PDNet")
        if not self.multicoil and op.smaps is not None:
            raise ValueError("a single-coil NC-PDNet takes an op without smaps")
        if self.refine_sensitivities:
            refined = real_to_complex(self.refiner(torch.view_as_real(op.smaps)))
            op = NufftOp(op.trajectory, op.image_shape, smaps=refined, density=op.density,
                         backend=op.backend, eps=op.eps, trajectory_key=op.trajectory_key)
        adjoint = op.weighted_adjoint(data)
        n = self.n_primal
        buffer = complex_to_channels(torch.stack([adjoint] * n, dim=1))
        for image_net in self.image_nets:
            gradient = op.weighted_adjoint(op.forward(torch.complex(buffer[:, 0], buffer[:, n])) - data)
            buffer = image_net(buffer, gradient.real, gradient.imag)
        return magnitude(channels_to_complex(buffer)[:, 0])


def ncpdnet_3d(multicoil: bool = False, n_iter: int = 6, n_primal: int = 2, n_filters: int = 16) -> NCPDNet:
    """The 3D NC-PDNet of the paper: Conv3d, 6 iterations, buffer of 2, 16 filters."""
    return NCPDNet(n_iter=n_iter, n_primal=n_primal, n_filters=n_filters, n_dims=3, multicoil=multicoil)
