"""Service settings: defaults, overridden by ``MRDSERVE_*`` environment variables, overridden by command-line flags.

Every field has a flag ``--field-name`` and a variable ``MRDSERVE_FIELD_NAME`` (``port`` -> ``--port``,
``MRDSERVE_PORT``). Lists come as repeated flags or, in variables, comma-separated (``MRDSERVE_ARTIFACTS`` is
separated by the path separator ``:``). Artifact directories given by flag or variable *replace* the bundled
demo artifacts unless ``--with-bundled`` / ``MRDSERVE_WITH_BUNDLED=1`` keeps them in front.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mrdserve.service.admission import Budget
from mrdserve.service.artifacts import BUNDLED_ARTIFACTS

BUNDLED_PRIORS = Path(__file__).resolve().parent / "priors"  # the demo score prior (service.posterior)
ENV_PREFIX = "MRDSERVE_"
RUNNERS = ("auto", "torchscript", "onnx")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ONNX_PROVIDER_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
                       "cpu": "CPUExecutionProvider"}
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def default_spool_dir() -> Path:
    return Path(tempfile.gettempdir()) / "mrdserve" / "spool"


@dataclass
class ServiceConfig:
    """Everything the engine, the REST API and the MRD server need to know; validated on construction."""

    host: str = "0.0.0.0"
    port: int = 8000
    mrd_port: int = 9002
    artifacts: list[Path] = field(default_factory=lambda: [BUNDLED_ARTIFACTS])
    with_bundled: bool = False
    device: str = "auto"
    runner: str = "auto"
    onnx_providers: list[str] = field(default_factory=list)  # empty: CUDA+CPU on a GPU, CPU otherwise
    max_batch: int = 4
    max_wait_ms: float = 10.0
    queue_size: int = 64
    request_timeout_s: float = 120.0
    warmup: bool = True
    spool_dir: Path = field(default_factory=default_spool_dir)
    spool_max_bytes: int = 10 * 1024**3
    result_ttl_s: float = 3600.0
    upload_max_bytes: int = 2 * 1024**3
    # admission (service.admission): what one request may declare and use, checked before any data is read
    max_matrix: int = Budget.max_matrix
    max_slices: int = Budget.max_slices
    max_request_bytes: int = Budget.max_request_bytes
    max_parse_s: float = Budget.max_parse_s
    # connections: a client that sends nothing for read_timeout_s is dropped; beyond max_connections per entry
    # point new connections are refused (REST 503, MRD ERROR); mrd_allow limits who may open MRD streams
    read_timeout_s: float = 30.0
    max_connections: int = 64
    mrd_allow: list[str] = field(default_factory=list)  # CIDR networks or addresses; empty: anyone
    api_keys: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)
    log_level: str = "INFO"
    # optional push of DICOM results to a PACS (service.pacs); empty pacs_url: no push
    pacs_url: str = ""
    pacs_protocol: str = "dicomweb"
    pacs_aet: str = "MRDSERVE"
    pacs_called_aet: str = "ANY-SCP"
    pacs_timeout_s: float = 30.0
    # uncertainty maps (service.posterior): score-prior artifacts, the sampling time each slice may take and the
    # time all the slices of one request may take together
    priors: list[Path] = field(default_factory=lambda: [BUNDLED_PRIORS])
    uncertainty_budget_s: float = 120.0
    uncertainty_request_budget_s: float = 600.0

    def __post_init__(self) -> None:
        self.artifacts = [Path(p) for p in self.artifacts]
        self.priors = [Path(p) for p in self.priors]
        self.spool_dir = Path(self.spool_dir)
        self.log_level = str(self.log_level).upper()
        self.onnx_providers = [ONNX_PROVIDER_NAMES.get(p.lower(), p) for p in self.onnx_providers]
        for name in ("port", "mrd_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be a TCP port in 0..65535, got {getattr(self, name)}")
        for name in ("max_batch", "queue_size", "max_matrix", "max_slices", "max_request_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("request_timeout_s", "result_ttl_s", "spool_max_bytes", "upload_max_bytes", "read_timeout_s",
                     "max_parse_s", "uncertainty_budget_s", "uncertainty_request_budget_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not _DEVICE.match(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.runner not in RUNNERS:
            raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {self.runner!r}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if not self.artifacts:
            raise ValueError("artifacts must name at least one directory")
        self.mrd_networks  # noqa: B018 (validates mrd_allow)
        from mrdserve.service.pacs import validate_target
        validate_target(self.pacs_url, self.pacs_protocol, self.pacs_aet, self.pacs_called_aet, self.pacs_timeout_s)

    @property
    def budget(self) -> Budget:
        """The per-request admission budget (``service.admission``)."""
        return Budget(max_matrix=self.max_matrix, max_slices=self.max_slices,
                      max_request_bytes=self.max_request_bytes, max_parse_s=self.max_parse_s)

    @property
    def mrd_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """``mrd_allow`` as networks (an address alone is a /32 or /128)."""
        try:
            return [ipaddress.ip_network(item, strict=False) for item in self.mrd_allow]
        except ValueError as error:
            raise ValueError(f"mrd_allow: {error} (give CIDR networks such as 10.0.0.0/8 or addresses)") from None

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    @classmethod
    def from_env_and_args(cls, args: argparse.Namespace | Mapping[str, Any] | None = None,
                          env: Mapping[str, str] | None = None) -> ServiceConfig:
        """Defaults < ``MRDSERVE_*`` variables (``env``, default ``os.environ``) < ``args`` values that are not None.

        ``args`` is an argparse namespace (or a dict) whose attribute names are field names; flags should default
        to None so that an absent flag does not hide a variable. Bad values raise ValueError naming the flag or
        variable.
        """
        env = os.environ if env is None else env
        given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
        values: dict[str, Any] = {}
        replaced_artifacts = False
        for spec in fields(cls):
            variable = ENV_PREFIX + spec.name.upper()
            flag = "--" + spec.name.replace("_", "-")
            if given.get(spec.name) is not None:
                values[spec.name] = _convert(spec.name, given[spec.name], flag)
            elif env.get(variable) not in (None, ""):
                values[spec.name] = _convert(spec.name, env[variable], variable)
            else:
                continue
            if spec.name == "api_keys" and not values[spec.name]:
                source = flag if given.get(spec.name) is not None else variable
                raise ValueError(f"{source} is set but holds no key; unset it to run without authentication, or "
                                 f"give keys (comma-separated in {variable})")
            replaced_artifacts |= spec.name == "artifacts"
        if replaced_artifacts and values.get("with_bundled", False):
            values["artifacts"] = [BUNDLED_ARTIFACTS, *values["artifacts"]]
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"invalid service configuration: {error}") from error

    def with_overrides(self, **changes: Any) -> ServiceConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


_INTS = ("port", "mrd_port", "max_batch", "queue_size", "spool_max_bytes", "upload_max_bytes", "max_matrix",
         "max_slices", "max_request_bytes", "max_connections")
_FLOATS = ("max_wait_ms", "request_timeout_s", "result_ttl_s", "pacs_timeout_s", "read_timeout_s", "max_parse_s",
           "uncertainty_budget_s", "uncertainty_request_budget_s")
_BOOLS = ("with_bundled", "warmup")
_LISTS = ("api_keys", "cors_origins", "onnx_providers", "mrd_allow")


def _convert(name: str, value: Any, source: str) -> Any:
    """``value`` (a string from the environment, or an already-typed flag value) as the field's type."""
    try:
        if name in _INTS:
            return int(value)
        if name in _FLOATS:
            return float(value)
        if name in _BOOLS:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in _TRUE + _FALSE:
                raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE[:-1])}")
            return text in _TRUE
    except ValueError as error:
        kind = "an integer" if name in _INTS else "a number" if name in _FLOATS else "a boolean"
        raise ValueError(f"{source}: expected {kind}, got {value!r}") from error
    if name in ("artifacts", "priors"):
        items = value.split(os.pathsep) if isinstance(value, str) else list(value)
        return [Path(p) for p in items if str(p)]
    if name in _LISTS:
        items = value.split(",") if isinstance(value, str) else list(value)
        return [str(p).strip() for p in items if str(p).strip()]
    if name == "spool_dir":
        return Path(value)
    return str(value)


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags for every field, all defaulting to None so that ``from_env_and_args`` sees what was given."""
    add = parser.add_argument
    add("--host", default=None, help="REST bind address (default 0.0.0.0; MRDSERVE_HOST)")
    add("--port", type=int, default=None, help="REST port (default 8000; MRDSERVE_PORT)")
    add("--mrd-port", type=int, default=None, help="MRD streaming port (default 9002; MRDSERVE_MRD_PORT)")
    add("--artifacts", action="append", type=Path, default=None, metavar="DIR",
        help="artifact directory (repeatable; replaces the bundled demo artifacts unless --with-bundled; "
             "MRDSERVE_ARTIFACTS, ':'-separated)")
    add("--with-bundled", action="store_true", default=None,
        help="keep the bundled demo artifacts in front of --artifacts (MRDSERVE_WITH_BUNDLED)")
    add("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto; MRDSERVE_DEVICE)")
    add("--runner", choices=RUNNERS, default=None,
        help="auto (TorchScript), torchscript or onnx (MRDSERVE_RUNNER)")
    add("--onnx-providers", action="append", default=None, metavar="PROVIDER",
        help="ONNX Runtime execution provider, in order: tensorrt, cuda, cpu or a full name (repeatable; "
             "MRDSERVE_ONNX_PROVIDERS, comma-separated)")
    add("--max-batch", type=int, default=None, help="largest batch per artifact (default 4)")
    add("--max-wait-ms", type=float, default=None, help="longest wait to fill a batch (default 10 ms)")
    add("--queue-size", type=int, default=None, help="jobs waiting per artifact before 503 (default 64)")
    add("--request-timeout-s", type=float, default=None, help="per-request timeout (default 120 s)")
    add("--spool-dir", type=Path, default=None, help="where asynchronous jobs are spooled")
    add("--spool-max-bytes", type=int, default=None, help="spool size bound (default 10 GiB)")
    add("--result-ttl-s", type=float, default=None, help="how long results are kept (default 3600 s)")
    add("--upload-max-bytes", type=int, default=None, help="largest upload (default 2 GiB)")
    add("--max-matrix", type=int, default=None,
        help="largest matrix size along any axis a request may declare (default 1024; MRDSERVE_MAX_MATRIX)")
    add("--max-slices", type=int, default=None,
        help="most images (slices x contrasts x repetitions ...) in one file (default 1024; MRDSERVE_MAX_SLICES)")
    add("--max-request-bytes", type=int, default=None,
        help="memory one request may need, estimated before it is read (default 4 GiB; MRDSERVE_MAX_REQUEST_BYTES)")
    add("--max-parse-s", type=float, default=None,
        help="longest read of one uploaded file, in a bounded child process (default 120 s; MRDSERVE_MAX_PARSE_S)")
    add("--read-timeout-s", type=float, default=None,
        help="drop a connection that sends nothing for this long (default 30 s; MRDSERVE_READ_TIMEOUT_S)")
    add("--max-connections", type=int, default=None,
        help="open connections per entry point, REST and MRD (default 64; MRDSERVE_MAX_CONNECTIONS)")
    add("--mrd-allow", action="append", default=None, metavar="NETWORK",
        help="only these networks may open MRD streams (repeatable CIDR; MRDSERVE_MRD_ALLOW, comma-separated); "
             "none: anyone who can reach the port")
    add("--api-keys", action="append", default=None, metavar="KEY",
        help="accepted API key (repeatable; MRDSERVE_API_KEYS, comma-separated); none: no authentication")
    add("--cors-origins", action="append", default=None, metavar="ORIGIN",
        help="allowed CORS origin (repeatable; MRDSERVE_CORS_ORIGINS); none: CORS off")
    add("--priors", action="append", type=Path, default=None, metavar="DIR",
        help="directory of score-prior artifacts for uncertainty maps (repeatable; default the bundled demo prior; "
             "MRDSERVE_PRIORS, ':'-separated)")
    add("--uncertainty-budget-s", type=float, default=None,
        help="posterior sampling time per slice when a request asks for uncertainty maps (default 120 s)")
    add("--uncertainty-request-budget-s", type=float, default=None,
        help="posterior sampling time of all the slices of one request together (default 600 s); slices past it "
             "keep their images without maps")
    add("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    add("--pacs-url", default=None, help="push DICOM results to this PACS: a DICOMweb base URL "
        "(http://pacs:8042/dicom-web) or host:port for C-STORE (MRDSERVE_PACS_URL); none: no push")
    add("--pacs-protocol", choices=("dicomweb", "cstore"), default=None,
        help="dicomweb (STOW-RS, default) or cstore (MRDSERVE_PACS_PROTOCOL)")
    add("--pacs-aet", default=None, help="our AE title for C-STORE (default MRDSERVE; MRDSERVE_PACS_AET)")
    add("--pacs-called-aet", default=None, help="the PACS's AE title for C-STORE (default ANY-SCP)")
    add("--pacs-timeout-s", type=float, default=None, help="timeout of one push (default 30 s)")
    return parser


def budget_from_env(env: Mapping[str, str] | None = None) -> Budget:
    """The admission budget from ``MRDSERVE_MAX_*`` variables (for ``mrdserve recon``, which has no server config)."""
    return ServiceConfig.from_env_and_args({}, env).budget
