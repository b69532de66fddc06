"""Build and parse ISMRMRD XML headers (ismrmrd 1.15 xsd objects) and read what reconstruction needs.

Matrices and fields of view here follow the header's own (x, y, z) order: x is the readout. Built headers
carry system and measurement information but no patient identity.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ismrmrd import xsd

from mrdserve.models.data.input_errors import InputError
from mrdserve.models.data.spatial import SpatialDimension

TRAJECTORY_UNITS_PARAMETER = "trajectory_units"
_LIMIT_NAMES = ("kspace_encoding_step_1", "kspace_encoding_step_2", "average", "slice", "contrast",
                "repetition", "set", "phase", "segment")


@dataclass(frozen=True)
class EncodingInfo:
    """What the assembler needs from one header encoding; matrices/FOVs named (x, y, z) as in the header."""

    encoded_matrix: SpatialDimension[int]
    recon_matrix: SpatialDimension[int]
    encoded_fov: SpatialDimension[float]
    recon_fov: SpatialDimension[float]
    trajectory: str
    e1_limits: tuple[int, int, int] | None  # (minimum, maximum, center)
    e2_limits: tuple[int, int, int] | None
    acceleration: tuple[int, int]
    receiver_channels: int | None
    average_max: int = 0

    @property
    def is_3d(self) -> bool:
        return self.encoded_matrix.z > 1

    @property
    def readout_length_after_oversampling(self) -> int:
        """Readout samples once the encoded/recon FOV ratio (readout oversampling) is removed."""
        encoded_x, recon_fov_x, encoded_fov_x = self.encoded_matrix.x, self.recon_fov.x, self.encoded_fov.x
        if recon_fov_x <= 0 or encoded_fov_x <= recon_fov_x * (1 + 1e-6):
            return encoded_x
        return max(1, round(encoded_x * recon_fov_x / encoded_fov_x))


def parse_header(header: Any) -> Any:
    """An ``ismrmrdHeader`` from an xsd object, XML str or bytes (trailing NULs stripped).

    Raises ``InputError`` (a ValueError) when the text is not ISMRMRD XML or a field does not hold a value of its
    type; the message names the field, never its value (headers carry patient names).
    """
    if isinstance(header, xsd.ismrmrdHeader):
        return header
    if isinstance(header, bytes | bytearray | memoryview):
        header = bytes(header).decode("utf-8", errors="replace")
    if not isinstance(header, str):
        raise TypeError(f"header must be an ismrmrdHeader, XML str or bytes, got {type(header).__name__}")
    text = header.strip("\x00 \t\r\n")
    if not text.startswith("<"):
        raise InputError("header is not ISMRMRD XML (it does not start with '<')", "invalid_ismrmrd_header")
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:  # process-wide state: one at a time
        warnings.simplefilter("always")
        try:
            parsed = xsd.CreateFromDocument(text)
        except Exception as exc:  # xsdata and lxml raise several parser error types
            raise InputError(f"header is not valid ISMRMRD XML: {_parser_reason(exc)}",
                             "invalid_ismrmrd_header") from None
    for warning in caught:
        field_name = _CONVERSION_FIELD.search(str(warning.message))
        if field_name is not None:
            expected = _CONVERSION_TYPE.search(str(warning.message))
            raise InputError(f"header field {field_name.group(1)} does not hold a valid "
                             f"{expected.group(1) if expected else 'value'}", "invalid_ismrmrd_header")
    if not isinstance(parsed, xsd.ismrmrdHeader):
        raise InputError("header is not an ISMRMRD header (its root element is not ismrmrdHeader)",
                         "invalid_ismrmrd_header")
    if not parsed.encoding:
        raise InputError("ISMRMRD header has no <encoding> section", "invalid_ismrmrd_header")
    _check_finite(parsed, "ismrmrdHeader")
    return parsed


def _check_finite(node: Any, where: str) -> None:
    """Every number in the header is finite and fits 64 bits (NaN, infinite or 400-digit sizes, FOVs, times and
    frequencies cannot be used anywhere)."""
    if dataclasses.is_dataclass(node):
        for spec in dataclasses.fields(node):
            _check_finite(getattr(node, spec.name), f"{where}.{spec.name}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check_finite(item, f"{where}[{i}]")
    elif isinstance(node, float | Decimal) and not math.isfinite(float(node)):
        raise InputError(f"header field {where} is not a finite number", "invalid_ismrmrd_header")
    elif isinstance(node, int) and not isinstance(node, bool) and not -(2**63) <= node < 2**64:
        raise InputError(f"header field {where} is out of the 64-bit range", "invalid_ismrmrd_header")


_WARNINGS_LOCK = threading.Lock()
_CONVERSION_FIELD = re.compile(r"Failed to convert value for `([\w.]+)`")
_CONVERSION_TYPE = re.compile(r"is not a valid `([\w.]+)`\s*$")


def _parser_reason(error: Exception) -> str:
    """What the XML parser objected to, without echoing document text (which may hold patient data)."""
    line = getattr(error, "lineno", None)
    return f"{type(error).__name__} at line {line}" if isinstance(line, int) else type(error).__name__


def header_to_xml(header: Any) -> str:
    """Serialise an xsd header to an XML string."""
    return xsd.ToXML(header)


def _limit(limits: Any, name: str) -> tuple[int, int, int] | None:
    value = getattr(limits, name, None) if limits is not None else None
    if value is None:
        return None
    return int(value.minimum), int(value.maximum), int(value.center)


def encoding_info(header: Any, encoding: int = 0) -> EncodingInfo:
    """Read matrices, FOVs, trajectory, limits and acceleration of one encoding of a header."""
    hdr = parse_header(header)
    if encoding >= len(hdr.encoding):
        raise InputError(f"header has {len(hdr.encoding)} encodings; encoding {encoding} does not exist",
                         "invalid_ismrmrd_header")
    try:
        return _encoding_info(hdr.encoding[encoding], hdr.acquisitionSystemInformation)
    except (AttributeError, TypeError) as error:  # a required element is missing (None)
        raise InputError(f"header encoding {encoding} lacks a required element (encodedSpace, reconSpace, "
                         f"matrixSize, fieldOfView_mm or trajectory): {type(error).__name__}",
                         "invalid_ismrmrd_header") from None


def _encoding_info(enc: Any, system: Any) -> EncodingInfo:
    enc_m, rec_m = enc.encodedSpace.matrixSize, enc.reconSpace.matrixSize
    enc_f, rec_f = enc.encodedSpace.fieldOfView_mm, enc.reconSpace.fieldOfView_mm
    acceleration = (1, 1)
    if enc.parallelImaging is not None:
        factor = enc.parallelImaging.accelerationFactor
        acceleration = (int(factor.kspace_encoding_step_1), int(factor.kspace_encoding_step_2))
    channels = getattr(system, "receiverChannels", None) if system is not None else None
    return EncodingInfo(
        encoded_matrix=SpatialDimension(int(enc_m.x), int(enc_m.y), int(enc_m.z or 1)),
        recon_matrix=SpatialDimension(int(rec_m.x), int(rec_m.y), int(rec_m.z or 1)),
        encoded_fov=SpatialDimension(float(enc_f.x), float(enc_f.y), float(enc_f.z)),
        recon_fov=SpatialDimension(float(rec_f.x), float(rec_f.y), float(rec_f.z)),
        trajectory=enc.trajectory.value if hasattr(enc.trajectory, "value") else str(enc.trajectory),
        e1_limits=_limit(enc.encodingLimits, "kspace_encoding_step_1"),
        e2_limits=_limit(enc.encodingLimits, "kspace_encoding_step_2"),
        acceleration=acceleration,
        receiver_channels=int(channels) if channels is not None else None,
        average_max=(_limit(enc.encodingLimits, "average") or (0, 0, 0))[1],
    )


def _xyz(values: Sequence[float], name: str, default_z: float) -> tuple[float, float, float]:
    values = tuple(values)
    if len(values) == 2:
        values = (*values, default_z)
    if len(values) != 3:
        raise ValueError(f"{name} must have 2 or 3 entries (x, y[, z]), got {values}")
    return values  # type: ignore[return-value]


def _limit_type(minimum: int, maximum: int, center: int) -> Any:
    return xsd.limitType(minimum=int(minimum), maximum=int(maximum), center=int(center))


# The XML header version of the ISMRMRD schema our headers follow: ISMRMRD 1.14 (its ISMRMRD_XMLHDR_VERSION is the
# library's minor version). Gadgetron 4.7, built on ISMRMRD 1.14, refuses to pass a header with another version to
# an external gadget. Reading accepts any version (and none).
XML_HEADER_VERSION = 14
SYNTHETIC_DEVICE = "00000"  # the "device serial number" of synthetic measurements


@dataclass(frozen=True)
class ScanIdentifiers:
    """The ids a scanner writes into a header: patient, study and measurement (``device_patient_study_scan``)."""

    patient: str
    study: str
    measurement: str


def synthetic_identifiers(scan_number: int) -> ScanIdentifiers:
    """Obviously synthetic ids in the form scanners use, for simulated files (never real patient data)."""
    patient, study = f"PHANTOM{scan_number:05d}", f"{scan_number:08d}"
    return ScanIdentifiers(patient, study, f"{SYNTHETIC_DEVICE}_{patient}_{study}_{scan_number}")


def build_header(
    matrix: Sequence[int],
    recon_matrix: Sequence[int] | None = None,
    fov_mm: Sequence[float] = (256.0, 256.0, 5.0),
    recon_fov_mm: Sequence[float] | None = None,
    n_coils: int = 1,
    trajectory: str = "cartesian",
    acceleration: Sequence[int] = (1,),
    calibration_lines: int = 0,
    encoding_limits: Mapping[str, tuple[int, int, int]] | None = None,
    trajectory_units: str | None = None,
    trajectory_identifier: str | None = None,
    h1_resonance_frequency_hz: int = 63_500_000,
    system_vendor: str = "mrdserve",
    system_model: str = "synthetic",
    field_strength_t: float = 1.5,
    protocol_name: str | None = None,
    scan_number: int = 1,
) -> Any:
    """An ISMRMRD header (xsd object) for one encoding; matrices/FOVs are (x, y[, z]), x = readout.

    It carries the XML header version of the ISMRMRD schema it follows (``XML_HEADER_VERSION``) and synthetic
    but scanner-like identifiers (``synthetic_identifiers(scan_number)``): Gadgetron's NoiseAdjust, for one,
    needs a patient and a measurement id.

    ``encoding_limits`` maps limit names (``kspace_encoding_step_1``, ``slice``, ``repetition`` ...) to
    (minimum, maximum, center); step-1/2 limits default to the full encoded matrix with center N//2.
    ``trajectory_units`` is recorded as a userParameterString so readers know the trajectory's units.
    """
    enc_xyz = tuple(int(v) for v in _xyz(matrix, "matrix", 1))
    rec_xyz = tuple(int(v) for v in _xyz(recon_matrix, "recon_matrix", 1)) if recon_matrix else enc_xyz
    enc_fov = _xyz(fov_mm, "fov_mm", 5.0)
    rec_fov = _xyz(recon_fov_mm, "recon_fov_mm", enc_fov[2]) if recon_fov_mm else enc_fov
    if min(enc_xyz) < 1 or min(rec_xyz) < 1:
        raise ValueError(f"matrix sizes must be positive, got matrix {enc_xyz}, recon_matrix {rec_xyz}")
    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}")
    known = [t.value for t in xsd.trajectoryType]
    if trajectory.lower() not in known:
        raise ValueError(f"trajectory {trajectory!r} is not an ISMRMRD trajectory type; use one of {known}")
    trajectory_enum = xsd.trajectoryType(trajectory.lower())

    limits: dict[str, Any] = {
        "kspace_encoding_step_0": _limit_type(0, enc_xyz[0] - 1, enc_xyz[0] // 2),
        "kspace_encoding_step_1": _limit_type(0, enc_xyz[1] - 1, enc_xyz[1] // 2),
        "kspace_encoding_step_2": _limit_type(0, enc_xyz[2] - 1, enc_xyz[2] // 2),
    }
    for name in ("slice", "contrast", "repetition", "set", "average", "phase", "segment"):
        limits[name] = _limit_type(0, 0, 0)
    for name, value in (encoding_limits or {}).items():
        if name not in _LIMIT_NAMES:
            raise ValueError(f"encoding_limits: unknown limit {name!r}; known: {', '.join(_LIMIT_NAMES)}")
        limits[name] = _limit_type(*value)

    accel = tuple(int(a) for a in acceleration) + (1,) * (2 - len(tuple(acceleration)))
    parallel = None
    if accel[0] > 1 or accel[1] > 1 or calibration_lines > 0:
        parallel = xsd.parallelImagingType(
            accelerationFactor=xsd.accelerationFactorType(kspace_encoding_step_1=accel[0],
                                                          kspace_encoding_step_2=accel[1]),
            calibrationMode=xsd.calibrationModeType.EMBEDDED if calibration_lines > 0 else None,
        )
    description = None
    if trajectory_units is not None or trajectory_identifier is not None:
        strings = []
        if trajectory_units is not None:
            strings.append(xsd.userParameterStringType(name=TRAJECTORY_UNITS_PARAMETER,
                                                       value=trajectory_units))
        description = xsd.trajectoryDescriptionType(identifier=trajectory_identifier or "mrdserve",
                                                    userParameterString=strings)
    encoding = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=enc_xyz[0], y=enc_xyz[1], z=enc_xyz[2]),
            fieldOfView_mm=xsd.fieldOfViewMm(x=float(enc_fov[0]), y=float(enc_fov[1]), z=float(enc_fov[2]))),
        reconSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=rec_xyz[0], y=rec_xyz[1], z=rec_xyz[2]),
            fieldOfView_mm=xsd.fieldOfViewMm(x=float(rec_fov[0]), y=float(rec_fov[1]), z=float(rec_fov[2]))),
        encodingLimits=xsd.encodingLimitsType(**limits),
        trajectory=trajectory_enum,
        trajectoryDescription=description,
        parallelImaging=parallel,
    )
    user_parameters = None
    if trajectory_units is not None:
        user_parameters = xsd.userParametersType(userParameterString=[
            xsd.userParameterStringType(name=TRAJECTORY_UNITS_PARAMETER, value=trajectory_units)])
    ids = synthetic_identifiers(scan_number)
    return xsd.ismrmrdHeader(
        version=XML_HEADER_VERSION,
        subjectInformation=xsd.subjectInformationType(patientID=ids.patient),
        studyInformation=xsd.studyInformationType(studyID=ids.study),
        measurementInformation=xsd.measurementInformationType(
            measurementID=ids.measurement, patientPosition=xsd.patientPositionType.HFS,
            protocolName=protocol_name),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor=system_vendor, systemModel=system_model,
            systemFieldStrength_T=float(field_strength_t), receiverChannels=int(n_coils)),
        experimentalConditions=xsd.experimentalConditionsType(
            H1resonanceFrequency_Hz=int(h1_resonance_frequency_hz)),
        encoding=[encoding],
        userParameters=user_parameters,
    )
