"""Optional push of DICOM results to a PACS: DICOMweb STOW-RS (httpx) or DIMSE C-STORE (pynetdicom).

A deployment names one target (``ServiceConfig.pacs_*``, i.e. ``MRDSERVE_PACS_URL`` ...). A push never raises:
it returns a ``PushReport`` saying how many instances the PACS accepted and, on failure, why, in words that
carry no patient data (status codes, counts, connection errors). Callers report it to the client, count it in
``mrdserve_pacs_push_total`` and log it; the images themselves are still returned to the client either way.
"""

from __future__ import annotations

import io
import logging
import re
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROTOCOLS = ("dicomweb", "cstore")
OK, FAILED = "ok", "failed"
# A DIMSE AE title: 1-16 characters of the default repertoire, no backslash, not only spaces.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_HOST_PORT = re.compile(r"^(?:dicom://)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")
_FAILED_SOP_SEQUENCE = "00081198"  # DICOM JSON tag of the STOW-RS response's Failed SOP Sequence
_REFERENCED_SOP_SEQUENCE = "00081199"


@dataclass(frozen=True)
class PacsTarget:
    """Where results go: ``url`` is a DICOMweb base (``http(s)://host:port/dicom-web``) or ``host:port``."""

    url: str
    protocol: str = "dicomweb"
    calling_aet: str = "MRDSERVE"
    called_aet: str = "ANY-SCP"
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        validate_target(self.url, self.protocol, self.calling_aet, self.called_aet, self.timeout_s)

    @classmethod
    def from_config(cls, config: Any) -> PacsTarget | None:
        """The target a ``ServiceConfig`` names, or None when no PACS is configured (``pacs_url`` empty)."""
        if not getattr(config, "pacs_url", ""):
            return None
        return cls(config.pacs_url, config.pacs_protocol, config.pacs_aet, config.pacs_called_aet,
                   config.pacs_timeout_s)


@dataclass
class PushReport:
    """What a push achieved: outcome ``ok`` only when the PACS accepted every instance."""

    protocol: str
    instances: int
    stored: int = 0
    error: str | None = None
    series_uids: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return OK if self.error is None and self.stored == self.instances else FAILED

    def header(self) -> str:
        """One ASCII line for the ``X-Mrdserve-Pacs`` response header."""
        text = f"{self.outcome}; {self.protocol}; {self.stored}/{self.instances} instances"
        if self.error:
            text += f"; {self.error}"
        return text.encode("ascii", "replace").decode()[:500]

    def public(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "protocol": self.protocol, "instances": self.instances,
                "stored": self.stored, "error": self.error}


def validate_target(url: str, protocol: str, calling_aet: str, called_aet: str, timeout_s: float) -> None:
    """ValueError naming the field when a PACS setting cannot work (checked at start-up, not at first push)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"pacs_protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if timeout_s <= 0:
        raise ValueError(f"pacs_timeout_s must be positive, got {timeout_s}")
    for name, title in (("pacs_aet", calling_aet), ("pacs_called_aet", called_aet)):
        if not _AE_TITLE.match(title) or not title.strip():
            raise ValueError(f"{name} must be a DICOM AE title (1-16 printable ASCII characters, no backslash), "
                             f"got {title!r}")
    if not url:
        return
    if protocol == "dicomweb":
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"pacs_url must be a DICOMweb base URL such as http://pacs:8042/dicom-web when "
                             f"pacs_protocol is dicomweb, got {_redact(url)!r}")
    else:
        match = _HOST_PORT.match(url)
        if match is None or not 0 < int(match["port"]) <= 65535:
            raise ValueError(f"pacs_url must be host:port (or dicom://host:port) when pacs_protocol is cstore, "
                             f"got {url!r}")


def _redact(url: str) -> str:
    """The URL without user:password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def dicom_files_in_zip(path: Path) -> list[bytes]:
    """The DICOM files (Part 10 bytes) of a packaged ``images-dicom.zip``, in name order."""
    with zipfile.ZipFile(path) as archive:
        return [archive.read(name) for name in sorted(archive.namelist()) if name.lower().endswith(".dcm")]


def _series_uids(files: Sequence[bytes]) -> list[str]:
    from pydicom import dcmread
    uids = {str(dcmread(io.BytesIO(data), stop_before_pixels=True).SeriesInstanceUID) for data in files}
    return sorted(uids)


def push(files: Sequence[bytes], target: PacsTarget) -> PushReport:
    """Send DICOM Part 10 files to ``target``; never raises (the report says what went wrong)."""
    report = PushReport(target.protocol, len(files))
    try:
        report.series_uids = _series_uids(files)
        if target.protocol == "dicomweb":
            report.stored = stow_rs(files, target)
        else:
            report.stored = c_store(files, target)
        if report.stored != report.instances:
            report.error = f"the PACS accepted {report.stored} of {report.instances} instances"
    except PacsError as error:
        report.error = str(error)
    except Exception as error:  # a push must never take the reconstruction down with it
        report.error = f"{type(error).__name__} while pushing"
    return report


class PacsError(RuntimeError):
    """A push failed; the message names the reason without patient data."""


# ------------------------------------------------------------------------------------------------ STOW-RS
def stow_rs(files: Sequence[bytes], target: PacsTarget) -> int:
    """POST the files as one ``multipart/related`` STOW-RS request to ``<url>/studies``; instances stored."""
    import httpx

    boundary = f"mrdserve-{uuid.uuid4().hex}"
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
                    for data in files) + b"--" + boundary.encode() + b"--\r\n"
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Accept": "application/dicom+json"}
    url = target.url.rstrip("/") + "/studies"
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=target.timeout_s)
    except httpx.TimeoutException as error:
        raise PacsError(f"STOW-RS to {_redact(url)} timed out after {target.timeout_s:g} s") from error
    except httpx.HTTPError as error:
        raise PacsError(f"STOW-RS to {_redact(url)} failed: {type(error).__name__}") from error
    if response.status_code not in (200, 202):
        raise PacsError(f"STOW-RS to {_redact(url)} answered HTTP {response.status_code}")
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    answer = answer[0] if isinstance(answer, list) and answer else answer
    failed = len(((answer or {}).get(_FAILED_SOP_SEQUENCE) or {}).get("Value") or [])
    referenced = ((answer or {}).get(_REFERENCED_SOP_SEQUENCE) or {}).get("Value")
    if referenced is not None:
        return len(referenced)
    return len(files) - failed if response.status_code == 200 else 0


# ------------------------------------------------------------------------------------------------ C-STORE
def parse_host_port(url: str) -> tuple[str, int]:
    match = _HOST_PORT.match(url)
    if match is None:
        raise PacsError(f"pacs_url {url!r} is not host:port")
    return match["host"].strip("[]"), int(match["port"])


def c_store(files: Sequence[bytes], target: PacsTarget) -> int:
    """Send each file with C-STORE over one association; the number the SCP stored (status 0x0000 or warning)."""
    from pydicom import dcmread
    from pynetdicom import AE

    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLogger("pynetdicom").level))
    host, port = parse_host_port(target.url)
    datasets = [dcmread(io.BytesIO(data)) for data in files]
    ae = AE(ae_title=target.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_s
    ae.connection_timeout = target.timeout_s
    for sop_class, syntax in sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}):
        ae.add_requested_context(sop_class, [syntax])
    association = ae.associate(host, port, ae_title=target.called_aet)
    if not association.is_established:
        reason = "rejected" if association.is_rejected else "aborted" if association.is_aborted else "not established"
        raise PacsError(f"C-STORE association with {target.called_aet}@{host}:{port} {reason}")
    stored = 0
    try:
        for dataset in datasets:
            status = association.send_c_store(dataset)
            code = getattr(status, "Status", None)
            if code is not None and (code == 0x0000 or code in (0xB000, 0xB007, 0xB006)):
                stored += 1
    finally:
        if association.is_established:
            association.release()
    return stored
