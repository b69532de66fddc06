"""Read and write fastMRI HDF5 files as ``KSpaceSample`` slices.

fastMRI stores ``kspace`` as ``[slices, coils, kx, ky]`` (single-coil: ``[slices, kx, ky]``) with the phase
encode on the LAST axis, and images (``reconstruction_rss``) as ``[slices, x, y]``. Ours put the readout last,
so both are transposed on the way in and out: k-space ``[C, ky, kx]``, images ``[y, x]``, masks ``[ky, 1]``.
Readout oversampling is removed per the ``ismrmrd_header`` (as for ISMRMRD files) unless asked not to.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import torch

from mrdserve.models.data.acquisitions import remove_readout_oversampling
from mrdserve.models.data.ismrmrd_header import EncodingInfo, encoding_info, header_to_xml, parse_header
from mrdserve.models.data.sample import Geometry, KSpaceSample, SampleIndex


class FastMRIVolume(NamedTuple):
    """Slices of a fastMRI file, its reference images ``[S, y, x]`` (or None), header and file attributes."""

    samples: list[KSpaceSample]
    reference: torch.Tensor | None
    header: Any
    attrs: dict[str, Any]


def _swap_last(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.swapaxes(array, -1, -2))


def _central_run(lines: np.ndarray) -> np.ndarray:
    """The contiguous run of sampled lines around the centre (fastMRI's low-frequency block)."""
    run = np.zeros_like(lines)
    center = lines.size // 2
    if not lines[center]:
        return run
    low, high = center, center
    while low > 0 and lines[low - 1]:
        low -= 1
    while high < lines.size - 1 and lines[high + 1]:
        high += 1
    run[low:high + 1] = True
    return run


def _acs_lines(lines: np.ndarray, num_low_frequency: int | None) -> np.ndarray:
    if num_low_frequency is None or num_low_frequency <= 0:
        return _central_run(lines)
    acs = np.zeros_like(lines)
    pad = (lines.size - num_low_frequency + 1) // 2  # as fastMRI's MaskFunc places the block
    acs[pad:pad + num_low_frequency] = True
    return acs & lines


def _file_mask(f: h5py.File, n_lines: int, n_readout: int) -> np.ndarray | None:
    if "mask" not in f:
        return None
    mask = np.asarray(f["mask"]).astype(bool)
    if mask.ndim == 1 and mask.size == n_lines:
        return mask
    if mask.ndim == 2 and mask.shape == (n_readout, n_lines):
        return np.asarray(_swap_last(mask).any(axis=-1))  # [ky]: an array, not a NumPy scalar
    raise ValueError(f"mask must be [ky={n_lines}] or [kx={n_readout}, ky={n_lines}] in fastMRI layout, "
                     f"got {mask.shape}")


def read_fastmri(path: str | Path, remove_oversampling: bool = True) -> FastMRIVolume:
    """Every slice of a fastMRI file as a ``KSpaceSample`` plus the stored reference reconstruction."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fastMRI file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            if "kspace" not in f:
                raise ValueError(f"{path} has no 'kspace' dataset (found: {sorted(f)})")
            kspace = np.asarray(f["kspace"])
            if kspace.ndim not in (3, 4):
                raise ValueError(f"kspace must be 3-D [slices, kx, ky] (single-coil) or 4-D "
                                 f"[slices, coils, kx, ky], got shape {kspace.shape}")
            if not np.iscomplexobj(kspace):
                raise ValueError(f"kspace must be complex, got {kspace.dtype}")
            n_readout, n_lines = kspace.shape[-2:]
            file_mask = _file_mask(f, n_lines, n_readout)
            reference_name = next((n for n in ("reconstruction_rss", "reconstruction_esc") if n in f), None)
            reference = np.asarray(f[reference_name]) if reference_name else None
            header_xml = f["ismrmrd_header"][()] if "ismrmrd_header" in f else None
            attrs = {key: (value.item() if isinstance(value, np.generic) else value)
                     for key, value in f.attrs.items()}
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file (truncated or corrupt): {exc}") from exc

    if kspace.ndim == 3:
        kspace = kspace[:, None]
    ours = torch.from_numpy(_swap_last(kspace).astype(np.complex64))  # [S, C, ky, kx]
    header = parse_header(header_xml) if header_xml is not None else None
    info: EncodingInfo | None = encoding_info(header) if header is not None else None
    reference_t = None if reference is None else torch.from_numpy(_swap_last(reference).astype(np.float32))

    if remove_oversampling and info is not None and info.encoded_fov.x > info.recon_fov.x * (1 + 1e-6):
        length = max(1, round(n_readout * info.recon_fov.x / info.encoded_fov.x))
        ours = remove_readout_oversampling(ours, length)
    if info is not None:
        recon_matrix = info.recon_matrix.image_shape(three_d=False)
        geometry = Geometry(field_of_view=info.recon_fov)
    else:
        ny, nx = (reference_t if reference_t is not None else ours).shape[-2:]
        recon_matrix = (ny, nx)
        geometry = Geometry()

    num_low = attrs.get("num_low_frequency")
    samples = []
    for i in range(ours.shape[0]):
        lines = file_mask if file_mask is not None else (ours[i].abs().amax(dim=(0, 2)) > 0).numpy()
        acs = _acs_lines(lines, int(num_low) if num_low is not None else None)
        acceleration = attrs.get("acceleration", round(lines.size / max(1, int(lines.sum()))))
        samples.append(KSpaceSample(
            kspace=ours[i].contiguous(),
            matrix=(int(ours.shape[-2]), int(ours.shape[-1])),
            recon_matrix=(int(recon_matrix[0]), int(recon_matrix[1])),
            mask=torch.from_numpy(lines.copy())[:, None],
            acs_mask=torch.from_numpy(acs)[:, None] if acs.any() else None,
            index=SampleIndex(slice=i),
            geometry=geometry,
            acceleration=(int(acceleration),),
        ))
    return FastMRIVolume(samples, reference_t, header, attrs)


def write_fastmri(path: str | Path, kspace: Any, reconstruction_rss: Any = None, header: Any = None,
                  mask: Any = None, attrs: Mapping[str, Any] | None = None) -> None:
    """Write our-layout k-space ``[S, C, ky, kx]`` (single-coil ``[S, ky, kx]``) as a fastMRI file.

    ``reconstruction_rss`` is ``[S, y, x]``, ``mask`` ``[ky]`` or ``[ky, 1]``, ``header`` an ISMRMRD
    header (xsd object or XML); all are stored in fastMRI's layout (phase encode last).
    """
    def as_numpy(values: Any) -> np.ndarray:
        return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)

    array = as_numpy(kspace)
    if array.ndim not in (3, 4):
        raise ValueError(f"kspace must be [S, C, ky, kx] or [S, ky, kx] (single-coil), got {array.shape}")
    if not np.iscomplexobj(array):
        raise TypeError(f"kspace must be complex, got {array.dtype}")
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=_swap_last(array.astype(np.complex64)))
        if reconstruction_rss is not None:
            rss = as_numpy(reconstruction_rss)
            if rss.ndim != 3 or rss.shape[0] != array.shape[0]:
                raise ValueError(f"reconstruction_rss must be [S={array.shape[0]}, y, x], got {rss.shape}")
            f.create_dataset("reconstruction_rss", data=_swap_last(rss.astype(np.float32)))
        if mask is not None:
            lines = as_numpy(mask).astype(bool)
            if lines.ndim == 2 and lines.shape[-1] == 1:
                lines = lines[:, 0]
            if lines.ndim != 1 or lines.size != array.shape[-2]:
                raise ValueError(f"mask must be [ky] or [ky, 1] with ky = {array.shape[-2]}, "
                                 f"got {lines.shape}")
            f.create_dataset("mask", data=lines)
        if header is not None:
            f.create_dataset("ismrmrd_header", data=header_to_xml(parse_header(header)).encode("utf-8"))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
