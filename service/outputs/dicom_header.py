"""Patient, study, series and equipment attributes for DICOM, read from an ISMRMRD header when it has them.

Missing fields get anonymous but valid values (type 2 attributes may be empty). UIDs from the header are kept
only when they are valid DICOM UIDs; otherwise fresh ones are generated.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pydicom.valuerep import format_number_as_ds

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
ANONYMOUS_NAME = "Anonymous^"
ANONYMOUS_ID = "ANONYMOUS"


def ds_number(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) for a float."""
    return format_number_as_ds(float(value))


def valid_uid(value: Any) -> str | None:
    """``value`` when it is a syntactically valid DICOM UID (at most 64 characters), else None."""
    text = str(value).strip() if value is not None else ""
    return text if text and len(text) <= 64 and _UID.match(text) else None


def dicom_date(value: Any) -> str:
    """``YYYYMMDD`` from an xsd date (``YYYY-MM-DD``) or '' when absent or malformed."""
    digits = re.sub(r"\D", "", str(value)) if value is not None else ""
    return digits[:8] if len(digits) >= 8 else ""


def dicom_time(value: Any) -> str:
    """``HHMMSS[.ffffff]`` from an xsd time (``HH:MM:SS[.f]``) or '' when absent or malformed."""
    match = re.match(r"^(\d{2}):?(\d{2}):?(\d{2})(\.\d{1,6})?", str(value)) if value is not None else None
    return "".join(part or "" for part in match.groups()) if match else ""


def _section(header: Any, name: str) -> Any:
    return getattr(header, name, None) if header is not None else None


def _get(section: Any, name: str) -> Any:
    value = getattr(section, name, None) if section is not None else None
    return getattr(value, "value", value)  # enums -> their text


def _lo(value: Any, limit: int = 64) -> str:
    return "" if value is None else str(value).strip()[:limit]


def add_patient_and_study(ds: Dataset, header: Any, now: datetime) -> None:
    """Patient and General Study modules from ``subjectInformation`` / ``studyInformation``."""
    subject, study = _section(header, "subjectInformation"), _section(header, "studyInformation")
    measurement = _section(header, "measurementInformation")
    ds.PatientName = _lo(_get(subject, "patientName")) or ANONYMOUS_NAME
    ds.PatientID = _lo(_get(subject, "patientID")) or ANONYMOUS_ID
    ds.PatientBirthDate = dicom_date(_get(subject, "patientBirthdate"))
    sex = _lo(_get(subject, "patientGender")).upper()
    ds.PatientSex = sex if sex in ("M", "F", "O") else ""
    weight, height = _get(subject, "patientWeight_kg"), _get(subject, "patientHeight_m")
    if weight:
        ds.PatientWeight = ds_number(weight)
    if height:
        ds.PatientSize = ds_number(height)
    ds.StudyInstanceUID = valid_uid(_get(study, "studyInstanceUID")) or generate_uid()
    ds.StudyDate = (dicom_date(_get(study, "studyDate")) or dicom_date(_get(measurement, "seriesDate"))
                    or now.strftime("%Y%m%d"))
    ds.StudyTime = (dicom_time(_get(study, "studyTime")) or dicom_time(_get(measurement, "seriesTime"))
                    or now.strftime("%H%M%S"))
    ds.StudyID = _lo(_get(study, "studyID"), 16)
    ds.AccessionNumber = _lo(_get(study, "accessionNumber"), 16)
    ds.ReferringPhysicianName = _lo(_get(study, "referringPhysicianName"))
    if _get(study, "studyDescription"):
        ds.StudyDescription = _lo(_get(study, "studyDescription"))
    if _get(study, "bodyPartExamined"):
        ds.BodyPartExamined = _lo(_get(study, "bodyPartExamined"), 16).upper()


def add_series_and_equipment(ds: Dataset, header: Any, series_number: int, description: str,
                             frame_of_reference_uid: str, now: datetime) -> None:
    """General Series, Frame of Reference and General Equipment modules."""
    measurement = _section(header, "measurementInformation")
    system = _section(header, "acquisitionSystemInformation")
    ds.Modality = "MR"
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = description[:64]
    ds.SeriesDate = dicom_date(_get(measurement, "seriesDate")) or now.strftime("%Y%m%d")
    ds.SeriesTime = dicom_time(_get(measurement, "seriesTime")) or now.strftime("%H%M%S")
    position = _lo(_get(measurement, "patientPosition"), 16)
    ds.PatientPosition = position if position in {"HFP", "HFS", "HFDR", "HFDL", "FFDR", "FFDL", "FFP",
                                                  "FFS"} else ""
    if _get(measurement, "protocolName"):
        ds.ProtocolName = _lo(_get(measurement, "protocolName"))
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.Laterality = ""
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "mrdserve"
    ds.ManufacturerModelName = "mrdserve"
    ds.SoftwareVersions = "mrdserve"
    if _get(system, "institutionName"):
        ds.InstitutionName = _lo(_get(system, "institutionName"))
    if _get(system, "stationName"):
        ds.StationName = _lo(_get(system, "stationName"), 16)
    if _get(system, "systemFieldStrength_T"):
        ds.MagneticFieldStrength = ds_number(_get(system, "systemFieldStrength_T"))


def header_frame_of_reference(header: Any) -> str | None:
    """The header's frame of reference UID when it is a valid UID."""
    return valid_uid(_get(_section(header, "measurementInformation"), "frameOfReferenceUID"))


def default_series_number(header: Any) -> int:
    """The measurement's initial series number, else 1."""
    value = _get(_section(header, "measurementInformation"), "initialSeriesNumber")
    return int(value) if value is not None and int(value) >= 0 else 1


def protocol_name(header: Any) -> str:
    """Protocol or series description of the measurement ('' when the header has neither)."""
    measurement = _section(header, "measurementInformation")
    return _lo(_get(measurement, "protocolName") or _get(measurement, "seriesDescription"))


_SCANNING = (("epi", "EP"), ("inversion", "IR"), ("ir", "IR"), ("tse", "SE"), ("spin", "SE"), ("se", "SE"),
             ("flash", "GR"), ("gre", "GR"), ("fisp", "GR"), ("trufi", "GR"), ("ssfp", "GR"))


def add_mr_acquisition(ds: Dataset, header: Any, is_3d: bool) -> None:
    """MR Image module acquisition attributes from ``sequenceParameters``; unknown ones empty (type 2)."""
    sequence = _section(header, "sequenceParameters")
    kind = _lo(_get(sequence, "sequence_type")).lower()
    ds.ScanningSequence = next((code for key, code in _SCANNING if key in kind), "RM")
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D" if is_3d else "2D"

    def first(name: str) -> str:
        values = _get(sequence, name) or []
        return ds_number(values[0]) if values else ""

    ds.RepetitionTime = first("TR")
    ds.EchoTime = first("TE")
    ds.EchoTrainLength = ""
    if ds.ScanningSequence == "IR" or first("TI"):
        ds.InversionTime = first("TI")
    if first("flipAngle_deg"):
        ds.FlipAngle = first("flipAngle_deg")
    frequency = _get(_section(header, "experimentalConditions"), "H1resonanceFrequency_Hz")
    if frequency:
        ds.ImagingFrequency = ds_number(float(frequency) / 1e6)
    ds.ImagedNucleus = "1H"
