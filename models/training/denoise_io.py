"""Magnitude images in and out of ``mrdserve denoise``: NumPy ``.npy``, PNG (8/16-bit grayscale), NIfTI
(``.nii``/``.nii.gz``, nibabel) and DICOM (pydicom), as a stack of 2D slices ``[n_slices, y, x]`` float64.

Slices: a 3D ``.npy`` array and a multi-frame DICOM are ``[slice, y, x]``; a 3D NIfTI volume is ``[x, y, slice]``
(nibabel's order), its last axis holding the slices. DICOM values are the modality values (rescale slope and
intercept applied) and go back as stored values of the input's type. A written image keeps the input's header
where the formats match (NIfTI affine and header; DICOM dataset, with new instance and series UIDs); DICOM output
needs a DICOM input, PNG output holds one 2D slice. Every problem a user can cause raises ``ImageError``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# file suffix -> format; ".nii.gz" is matched before ".gz" would be
SUFFIXES = {".npy": "npy", ".png": "png", ".nii": "nifti", ".nii.gz": "nifti", ".dcm": "dicom", ".dicom": "dicom"}


class ImageError(ValueError):
    """A magnitude image that cannot be read or written as asked (the message names the file and the problem)."""


@dataclass
class MagnitudeImage:
    """Slices ``[n, y, x]`` float64 and what is needed to write them back in the input's format."""

    slices: np.ndarray
    format: str
    volume: bool  # the input was 3D (a volume of slices), not one 2D image
    source: Any = field(default=None, repr=False)  # nibabel image, pydicom dataset or PNG bit depth
    png_bits: int = 16


def image_format(path: str | Path) -> str:
    """The format of ``path`` from its suffix (a file without one is read as DICOM if it has the DICM preamble)."""
    path = Path(path)
    name = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    if not path.suffix and path.is_file():
        with path.open("rb") as stream:
            if stream.read(132)[128:] == b"DICM":
                return "dicom"
    raise ImageError(f"{str(path)!r}: unknown format; expected {', '.join(SUFFIXES)}")


def _as_slices(array: np.ndarray, path: Path, slice_axis: int = 0) -> tuple[np.ndarray, bool]:
    """Check a real 2D/3D array of finite values; return ``[n, y, x]`` float64 and whether it was 3D."""
    if np.iscomplexobj(array):
        raise ImageError(f"{str(path)!r}: complex data; give a magnitude image")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ImageError(f"{str(path)!r}: expected numeric pixels, got dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ImageError(f"{str(path)!r}: expected a 2D image or a 3D volume, got {array.ndim}D of shape "
                         f"{tuple(array.shape)}")
    if min(array.shape) < 1:
        raise ImageError(f"{str(path)!r}: empty image of shape {tuple(array.shape)}")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageError(f"{str(path)!r}: the image holds non-finite values (NaN or infinity)")
    if values.ndim == 2:
        return values[None], False
    return np.moveaxis(values, slice_axis, 0), True


def read_image(path: str | Path) -> MagnitudeImage:
    """Read ``path`` (format from its suffix) as ``MagnitudeImage``."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{str(path)!r} does not exist")
    kind = image_format(path)
    try:
        if kind == "npy":
            slices, volume = _as_slices(np.load(path, allow_pickle=False), path)
            return MagnitudeImage(slices, kind, volume)
        if kind == "png":
            return _read_png(path)
        if kind == "nifti":
            import nibabel

            image = nibabel.load(path)
            slices, volume = _as_slices(np.asanyarray(image.dataobj), path, slice_axis=-1)
            return MagnitudeImage(slices, kind, volume, source=image)
        return _read_dicom(path)
    except ImageError:
        raise
    except Exception as exc:  # readers raise many types for damaged files
        raise ImageError(f"{str(path)!r} could not be read as {kind}: {exc}") from exc


def _read_png(path: Path) -> MagnitudeImage:
    from PIL import Image

    with Image.open(path) as image:
        mode = image.mode
        if mode not in ("L", "I;16", "I;16B", "I;16L", "I"):
            raise ImageError(f"{str(path)!r}: expected an 8- or 16-bit grayscale PNG, got mode {mode}")
        array = np.asarray(image)
    slices, volume = _as_slices(array, path)
    return MagnitudeImage(slices, "png", volume, png_bits=8 if mode == "L" else 16)


def _read_dicom(path: Path) -> MagnitudeImage:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    dataset = pydicom.dcmread(path)
    if "PixelData" not in dataset:
        raise ImageError(f"{str(path)!r}: the DICOM file holds no image (no PixelData)")
    if int(dataset.get("SamplesPerPixel", 1)) != 1:
        raise ImageError(f"{str(path)!r}: expected a monochrome DICOM image, got {dataset.SamplesPerPixel} samples "
                         "per pixel")
    stored = dataset.pixel_array
    slices, volume = _as_slices(np.asarray(apply_modality_lut(stored, dataset)), path)
    return MagnitudeImage(slices, "dicom", volume, source=dataset)


def write_image(path: str | Path, image: MagnitudeImage, slices: np.ndarray) -> Path:
    """Write ``slices`` (same shape as ``image.slices``) to ``path`` in the format of its suffix."""
    path = Path(path)
    kind = image_format(path)
    if slices.shape != image.slices.shape:
        raise ImageError(f"output shape {slices.shape} differs from the input's {image.slices.shape}")
    if not path.parent.is_dir():
        raise ImageError(f"output folder {str(path.parent)!r} does not exist")
    data = slices if image.volume else slices[0]
    if kind == "npy":
        np.save(path, data.astype(np.float32))
    elif kind == "png":
        _write_png(path, image, data)
    elif kind == "nifti":
        _write_nifti(path, image, slices)
    else:
        _write_dicom(path, image, slices)
    return path


def _write_png(path: Path, image: MagnitudeImage, data: np.ndarray) -> None:
    """Integer PNG: the input PNG's bit depth and values; other inputs as 16-bit, their maximum at 65535."""
    from PIL import Image

    if data.ndim != 2:
        raise ImageError(f"{str(path)!r}: a PNG holds one 2D image; the input is a volume of {data.shape[0]} slices "
                         "(write .npy or NIfTI)")
    if image.format == "png":
        bits, scale = image.png_bits, 1.0
    else:
        peak = float(np.abs(image.slices).max())
        bits, scale = 16, (65535.0 / peak if peak > 0 else 1.0)
    top = 2**bits - 1
    pixels = np.clip(np.rint(data * scale), 0, top)
    if bits == 8:
        Image.fromarray(pixels.astype(np.uint8)).save(path)
    else:
        Image.fromarray(pixels.astype(np.uint16)).save(path)


def _write_nifti(path: Path, image: MagnitudeImage, slices: np.ndarray) -> None:
    import nibabel

    data = np.moveaxis(slices, 0, -1) if image.volume else slices[0]
    if image.format == "nifti":
        source = image.source
        out = nibabel.Nifti1Image(data.astype(np.float32), source.affine, header=source.header.copy())
    else:
        out = nibabel.Nifti1Image(data.astype(np.float32), np.eye(4))
    out.set_data_dtype(np.float32)
    out.header.set_slope_inter(1.0, 0.0)
    nibabel.save(out, path)


def _write_dicom(path: Path, image: MagnitudeImage, slices: np.ndarray) -> None:
    """The input DICOM with the denoised pixels as stored values (inverse rescale, rounded, clipped to the stored
    type), uncompressed, new SOP instance and series UIDs, marked DERIVED."""
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if image.format != "dicom":
        raise ImageError(f"{str(path)!r}: DICOM output needs a DICOM input (its header); write .npy, PNG or NIfTI")
    dataset = copy.deepcopy(image.source)
    slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
    stored_type = dataset.pixel_array.dtype
    info = np.iinfo(stored_type) if np.issubdtype(stored_type, np.integer) else None
    stored = np.rint((slices - intercept) / slope)
    if info is not None:
        bits = int(dataset.get("BitsStored", info.bits))
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if info.min < 0 else (0, 2**bits - 1)
        stored = np.clip(stored, low, high)
    stored = stored.astype(stored_type)
    data = stored if image.volume else stored[0]
    if dataset.file_meta.TransferSyntaxUID.is_compressed:
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.PixelData = data.tobytes()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.SeriesInstanceUID = generate_uid()
    if "ImageType" in dataset:
        dataset.ImageType = ["DERIVED", *list(dataset.ImageType)[1:]]
    dataset.SeriesDescription = f"{dataset.get('SeriesDescription', '')} denoised".strip()
    dataset.save_as(path, enforce_file_format=True)
