"""DICOM output: one MR Image Storage file per 2D slice (per partition of a 3D volume), one series per call.

Geometry comes from ISMRMRD (see ``service.outputs.geometry``): ImageOrientationPatient is (read_dir,
phase_dir) because image columns run along read_dir; ImagePositionPatient is the top-left pixel centre.
Magnitudes are stored as 16-bit unsigned steps of a series-wide slope (the full dynamic range is kept), given
in a Real World Value Mapping; the MR IOD has no Modality LUT, so windows are in stored values.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from mrdserve.service.engine.result import ImageRole, ReconResult
from mrdserve.service.outputs.dicom_header import (
    add_mr_acquisition,
    add_patient_and_study,
    add_series_and_equipment,
    default_series_number,
    ds_number,
    header_frame_of_reference,
    protocol_name,
)
from mrdserve.service.outputs.geometry import Plane, image_planes, plane_images
from mrdserve.service.outputs.presentation import UINT16_MAX, describe, display_window, to_uint16, uint16_slope


def _acquisition_time(result: ReconResult) -> str:
    """HHMMSS.ffffff from the acquisition time stamp (2.5 ms ticks since midnight), '' when absent."""
    stamp = int(getattr(result.sample.reference_head, "acquisition_time_stamp", 0) or 0)
    if stamp <= 0:
        return ""
    seconds = (stamp * 2.5e-3) % 86400
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}{int(minutes):02d}{secs:09.6f}"


def _real_world_mapping(slope: float) -> Dataset:
    """Stored value -> reconstructed magnitude (data units): ``value * slope`` (MR has no Modality LUT)."""
    item = Dataset()
    item.RealWorldValueFirstValueMapped = 0
    item.RealWorldValueLastValueMapped = UINT16_MAX
    item.RealWorldValueIntercept = 0.0
    item.RealWorldValueSlope = float(slope)
    item.LUTExplanation = "reconstructed magnitude"
    item.LUTLabel = "MAGNITUDE"
    units = Dataset()
    units.CodeValue = "1"
    units.CodingSchemeDesignator = "UCUM"
    units.CodeMeaning = "no units"
    item.MeasurementUnitsCodeSequence = [units]
    return item


def _plane_attributes(ds: Dataset, plane: Plane) -> None:
    ds.ImagePositionPatient = [ds_number(v) for v in plane.origin]
    ds.ImageOrientationPatient = [ds_number(v) for v in (*plane.row_dir, *plane.col_dir)]
    ds.PixelSpacing = [ds_number(v) for v in plane.spacing]
    ds.SliceThickness = ds_number(plane.thickness)
    ds.SliceLocation = ds_number(plane.location)


def _image_file(common: Dataset, result: ReconResult, plane: Plane, pixels: np.ndarray, instance: int,
                now: datetime) -> Dataset:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.update(common)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = instance
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    acquisition_time = _acquisition_time(result)
    if acquisition_time:
        ds.AcquisitionTime = acquisition_time
    index = result.sample.index
    ds.AcquisitionNumber = index.repetition + 1
    ds.EchoNumbers = index.contrast + 1
    comment = describe(result)
    ds.ImageComments = comment
    ds.DerivationDescription = f"reconstructed by mrdserve: {comment}"[:1024]
    _plane_attributes(ds, plane)
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def _common_attributes(results: list[ReconResult], header: Any, series_description: str | None,
                       series_number: int | None, now: datetime, same_as: Dataset | None) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    add_patient_and_study(ds, header, now)
    if same_as is not None:  # a posterior series joins the reconstruction's study
        ds.StudyInstanceUID = same_as.StudyInstanceUID
    makers = sorted({r.maker for r in results})
    roles = {r.role for r in results}
    if len(roles) != 1:
        raise ValueError(f"results: one DICOM series holds one kind of image, got {sorted(roles)}")
    (role,) = roles
    description = series_description or " ".join(filter(None, [role.title, protocol_name(header), "mrdserve",
                                                               *makers]))
    number = (series_number if series_number is not None else default_series_number(header)) + role.series_offset
    frame = same_as.FrameOfReferenceUID if same_as is not None else header_frame_of_reference(header) or generate_uid()
    add_series_and_equipment(ds, header, number, description, frame, now)
    ds.SeriesInstanceUID = generate_uid()
    ds.ImageType = ["DERIVED", "PRIMARY" if role is not ImageRole.posterior_std else "SECONDARY", "OTHER"]
    add_mr_acquisition(ds, header, is_3d=any(np.ndim(r.image) == 3 for r in results))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    return ds


def write_dicom_series(results: list[ReconResult], header: Any, out_dir: Path,
                       series_description: str | None = None, *, series_number: int | None = None,
                       same_study_as: Path | None = None) -> list[Path]:
    """Write ``results`` (of one ``ImageRole``) as one DICOM series (one file per slice or partition) into
    ``out_dir``; return paths. A posterior role's series number is the reconstruction's plus the role's offset;
    ``same_study_as`` (a file of the reconstruction's series) gives it that study and frame of reference.

    ``header`` (ISMRMRD xsd header or None) supplies patient, study and sequence fields where present.
    """
    if not results:
        raise ValueError("results: nothing to write (no images)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now()
    planes = [(result, plane, image) for result in results
              for plane, image in zip(image_planes(result), plane_images(result), strict=True)]
    images = [image for _, _, image in planes]
    slope = uint16_slope(images)
    window = display_window(images)
    same_as = pydicom.dcmread(same_study_as, stop_before_pixels=True) if same_study_as is not None else None
    common = _common_attributes(results, header, series_description, series_number, now, same_as)
    common.RealWorldValueMappingSequence = [_real_world_mapping(slope)]
    common.WindowCenter = ds_number(window.center / slope)
    common.WindowWidth = ds_number(max(window.width / slope, 1.0))
    common.WindowCenterWidthExplanation = "magnitude 0 to 99.5th percentile"
    paths = []
    for instance, (result, plane, image) in enumerate(planes, start=1):
        ds = _image_file(common, result, plane, to_uint16(image, slope), instance, now)
        path = out_dir / f"IM{instance:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
