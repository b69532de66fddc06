"""GRAPPA (Griswold et al. 2002) for 2D Cartesian k-space undersampled along ky.

Each missing ky line is synthesised per coil from its nearest acquired lines (``n_sources`` above and below,
``kernel_kx`` readout neighbours). Lines with the same pattern of source offsets share one kernel, calibrated on
the ACS block by Tikhonov-regularised least squares, so equispaced masks (one pattern) and random-offset masks
(a few patterns) are both handled. Acquired lines are kept as measured.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from mrdserve.models.physics.classical import rss
from mrdserve.models.physics.fft import ifftnc

MIN_ROWS_PER_UNKNOWN = 5  # calibration equations per kernel weight, against over-fitting a narrow ACS block
MAX_CALIBRATION_RESIDUAL = 0.25  # a kernel that cannot explain its own ACS lines better than this is not used


def _source_offsets(sampled: list[bool], line: int, n_sources: int, max_distance: int) -> tuple[int, ...]:
    """Offsets of the nearest ``n_sources`` acquired lines above and below ``line`` (within ``max_distance``)."""
    n_ky = len(sampled)
    above = [d for d in range(1, max_distance + 1) if line - d >= 0 and sampled[line - d]][:n_sources]
    below = [d for d in range(1, max_distance + 1) if line + d < n_ky and sampled[line + d]][:n_sources]
    return tuple(sorted([-d for d in above] + below))


def _gather_sources(kspace: torch.Tensor, lines: torch.Tensor, offsets: tuple[int, ...],
                    kernel_kx: int) -> torch.Tensor:
    """Source vectors ``[len(lines) * kx, C * len(offsets) * kernel_kx]`` around each target line."""
    n_coils, _, n_kx = kspace.shape
    half = kernel_kx // 2
    padded = functional.pad(kspace, (half, half))  # zero outside the readout
    rows = torch.stack([padded[:, lines + offset] for offset in offsets], dim=1)  # [C, O, L, kx + 2h]
    windows = rows.unfold(-1, kernel_kx, 1)  # [C, O, L, kx, kernel_kx]
    return windows.permute(2, 3, 0, 1, 4).reshape(len(lines) * n_kx, n_coils * len(offsets) * kernel_kx)


def _calibrate(kspace: torch.Tensor, acs: torch.Tensor, offsets: tuple[int, ...], kernel_kx: int,
               regularisation: float) -> torch.Tensor | None:
    """Kernel ``[C * O * kernel_kx, C]`` from ACS lines whose sources are also ACS lines, or None if too few."""
    n_ky = acs.numel()
    targets = [t for t in range(n_ky) if bool(acs[t]) and all(0 <= t + o < n_ky and bool(acs[t + o])
                                                            for o in offsets)]
    if not targets:
        return None
    lines = torch.tensor(targets, device=kspace.device)
    sources = _gather_sources(kspace, lines, offsets, kernel_kx)
    if sources.shape[0] < MIN_ROWS_PER_UNKNOWN * sources.shape[1]:
        return None
    target = kspace[:, lines].permute(1, 2, 0).reshape(-1, kspace.shape[0])
    gram = sources.conj().T @ sources
    weight = regularisation * gram.diagonal().real.mean().clamp_min(torch.finfo(gram.real.dtype).tiny)
    gram = gram + weight * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    kernel = torch.linalg.solve(gram, sources.conj().T @ target)
    residual = (sources @ kernel - target).abs().square().sum() / target.abs().square().sum().clamp_min(1e-30)
    return kernel if float(residual) <= MAX_CALIBRATION_RESIDUAL else None


def grappa_kspace(kspace: torch.Tensor, sampled: torch.Tensor, acs: torch.Tensor, n_sources: int = 2,
                  kernel_kx: int = 5, regularisation: float = 1e-2, max_distance: int = 16) -> torch.Tensor:
    """Fill the missing ky lines of ``kspace`` ``[C, ky, kx]`` (complex).

    Args:
        sampled: bool ``[ky]``, the acquired lines; acs: bool ``[ky]``, the calibration lines (acquired).
        n_sources: acquired lines used on each side of a missing line.
        kernel_kx: readout neighbours per source line (odd).
        regularisation: Tikhonov weight relative to the mean diagonal of the calibration Gram matrix.
        max_distance: farthest source line considered (lines farther from any acquired line stay zero).
    """
    if kspace.dim() != 3 or not torch.is_complex(kspace):
        raise ValueError(f"GRAPPA needs complex k-space [C, ky, kx], got {tuple(kspace.shape)} {kspace.dtype}")
    if kernel_kx < 1 or kernel_kx % 2 == 0:
        raise ValueError(f"kernel_kx must be odd and >= 1, got {kernel_kx}")
    sampled, acs = sampled.reshape(-1).bool().cpu(), acs.reshape(-1).bool().cpu()
    if sampled.numel() != kspace.shape[1] or acs.numel() != kspace.shape[1]:
        raise ValueError(f"masks over ky must have {kspace.shape[1]} entries, got {sampled.numel()} and "
                         f"{acs.numel()}")
    acs = acs & sampled
    if not bool(acs.any()):
        raise ValueError("GRAPPA needs calibration (ACS) lines; none are acquired")
    flags = sampled.tolist()
    patterns: dict[tuple[int, ...], list[int]] = {}
    for line in range(kspace.shape[1]):
        if not flags[line]:
            offsets = _source_offsets(flags, line, n_sources, max_distance)
            if offsets:
                patterns.setdefault(offsets, []).append(line)
    filled = kspace.clone()
    for offsets, lines in patterns.items():
        kernel, used = None, offsets
        while kernel is None and used:
            kernel = _calibrate(kspace, acs, used, kernel_kx, regularisation)
            if kernel is None:  # the ACS block is too narrow for this span: drop the farthest source
                used = tuple(sorted(sorted(used, key=abs)[:-1]))
        if kernel is None:  # no reliable kernel: the lines stay zero (never worse than zero-filling)
            continue
        targets = torch.tensor(lines, device=kspace.device)
        values = _gather_sources(kspace, targets, used, kernel_kx) @ kernel  # [L * kx, C]
        filled[:, targets] = values.reshape(len(lines), kspace.shape[2], -1).permute(2, 0, 1)
    return filled


def grappa_rss(kspace: torch.Tensor, sampled: torch.Tensor, acs: torch.Tensor, **kwargs) -> torch.Tensor:
    """GRAPPA then root-sum-of-squares coil combination: magnitude ``[y, x]``."""
    return rss(ifftnc(grappa_kspace(kspace, sampled, acs, **kwargs).unsqueeze(0), 2), dim=1)[0]
