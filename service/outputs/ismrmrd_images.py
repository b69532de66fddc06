"""ISMRMRD image output: magnitude ``ismrmrd.Image`` objects with header fields and meta, and an HDF5 writer.

Header fields come from the sample (indices, geometry) and its reference acquisition (measurement uid, time
stamps); the field of view is the header's recon space. ``Image.from_array`` in ismrmrd 1.15 takes row-major
``[(z,) y, x]`` arrays (no transpose), so ``data[0, z, y, x]`` is pixel (y, x). Data are float32 by default or
uint16 (Gadgetron's C++ reader has no int16).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np

from mrdserve.models.data.ismrmrd_header import header_to_xml
from mrdserve.service.engine.result import ImageRole, ReconResult
from mrdserve.service.outputs.presentation import describe, display_window, to_uint16, uint16_slope

IMAGE_DTYPES = ("float32", "uint16")


def _meta(result: ReconResult, window_center: float, window_width: float, slope: float | None) -> ismrmrd.Meta:
    meta = ismrmrd.Meta()
    meta["DataRole"] = result.role.data_role
    meta["ImageProcessingHistory"] = ["MRDSERVE"]
    meta["ImageComments"] = describe(result)
    meta["SequenceDescriptionAdditional"] = f"mrdserve_{result.maker}"
    meta["WindowCenter"] = f"{window_center:.6g}"
    meta["WindowWidth"] = f"{window_width:.6g}"
    meta["Keep_image_geometry"] = "1"  # OpenRecon and Gadgetron keep the image's own orientation
    geometry = result.sample.geometry  # the orientation OpenRecon (and DICOM) writers take from the meta
    meta["ImageRowDir"] = [f"{v:.9g}" for v in geometry.read_dir]
    meta["ImageColumnDir"] = [f"{v:.9g}" for v in geometry.phase_dir]
    if slope is not None:
        meta["RealWorldValueSlope"] = f"{slope:.9g}"  # stored uint16 value x slope = magnitude
    return meta


def _set_header_fields(image: ismrmrd.Image, result: ReconResult, series_index: int, image_index: int) -> None:
    sample, geometry = result.sample, result.sample.geometry
    image.image_type = ismrmrd.IMTYPE_MAGNITUDE
    image.image_series_index = series_index
    image.image_index = image_index
    for name in ("slice", "contrast", "repetition", "set", "phase"):
        setattr(image, name, int(getattr(sample.index, name)))
    image.position = tuple(float(v) for v in geometry.position)
    image.read_dir = tuple(float(v) for v in geometry.read_dir)
    image.phase_dir = tuple(float(v) for v in geometry.phase_dir)
    image.slice_dir = tuple(float(v) for v in geometry.slice_dir)
    image.patient_table_position = tuple(float(v) for v in geometry.patient_table_position)
    image.field_of_view = tuple(float(v) for v in geometry.field_of_view)
    head = sample.reference_head
    if head is not None:
        image.measurement_uid = int(head.measurement_uid)
        image.acquisition_time_stamp = int(head.acquisition_time_stamp)
        image.physiology_time_stamp = tuple(int(v) for v in head.physiology_time_stamp)
        image.average = int(head.idx.average)


def to_ismrmrd_images(results: list[ReconResult], header: Any = None, series_index: int = 1,
                      dtype: str = "float32", first_image_index: int = 1) -> list[ismrmrd.Image]:
    """One magnitude ``ismrmrd.Image`` per result (a 3D result stays one volume image), indices counted from
    ``first_image_index`` (streams that send one slice at a time continue the count).

    ``dtype`` is ``float32`` (data units) or ``uint16`` (one slope over ``results``, kept in meta as
    ``RealWorldValueSlope``); the display window too is one over ``results``: series-wide for a file, per image
    for a stream, which sends each image alone as soon as it is made (``service.stream``). ``header`` is accepted
    for symmetry with the other writers: the recon-space field of view already sits in each sample's geometry.
    """
    if dtype not in IMAGE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(IMAGE_DTYPES)}, got {dtype!r}")
    arrays = [np.asarray(result.image, dtype=np.float32) for result in results]
    for array in arrays:
        if array.ndim not in (2, 3):
            raise ValueError(f"result image must be [y, x] or [z, y, x], got shape {array.shape}")
    window = display_window(arrays)
    slope = uint16_slope(arrays) if dtype == "uint16" else None
    roles = {result.role for result in results}
    if len(roles) > 1:  # one window and slope per kind of image: uncertainty maps are not windowed as images
        return [image for role in ImageRole for image in to_ismrmrd_images(
            [r for r in results if r.role is role], header, series_index, dtype, first_image_index)]
    images = []
    for number, (result, array) in enumerate(zip(results, arrays, strict=True), start=first_image_index):
        data = to_uint16(array, slope) if slope is not None else array
        center, width = ((window.center / slope, max(window.width / slope, 1.0)) if slope is not None
                         else (window.center, window.width))
        image = ismrmrd.Image.from_array(np.ascontiguousarray(data))
        _set_header_fields(image, result, series_index + result.role.series_offset, number)
        image.meta = _meta(result, center, width, slope)
        images.append(image)
    return images


def write_ismrmrd_images(results: list[ReconResult], header: Any, path: Path, series_index: int = 1,
                         dtype: str = "float32", group: str = "dataset") -> Path:
    """Write the images (and the ISMRMRD header, when given) to an HDF5 file; returns ``path``.

    Images of one series and shape share the image group ``image_<series index>`` (posterior images: the next
    indices); other shapes of a series get ``_<n>`` suffixes.
    """
    if not results:
        raise ValueError("results: nothing to write (no images)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = to_ismrmrd_images(results, header, series_index, dtype)
    groups: dict[tuple[int, ...], str] = {}
    with ismrmrd.Dataset(str(path), group, mode="w") as dataset:
        if header is not None:
            dataset.write_xml_header(header_to_xml(header).encode("utf-8"))
        for image in images:
            key = (int(image.image_series_index), *image.data.shape)
            if key not in groups:
                same_series = sum(1 for k in groups if k[0] == key[0])
                groups[key] = f"image_{key[0]}" + (f"_{same_series}" if same_series else "")
            dataset.append_image(groups[key], image)
    return path
