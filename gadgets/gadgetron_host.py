"""A real Gadgetron 4.7 server around our gadget, and its ``gadgetron_ismrmrd_client``: for integration checks
and benchmarks on a machine that has one (a CPU build for Debian is in ``../shared/gadgetron``).

Found by ``MRDSERVE_GADGETRON`` (its install prefix) or ``gadgetron`` on ``PATH``. The server runs on a free port
with a storage server beside it (NoiseAdjust needs one; ``storage`` is a script serving the endpoints Gadgetron
4.7 uses, e.g. ``../shared/gadgetron/storage_standin.py``), starts ``<execute>`` gadgets with the ``python`` of
this environment, and is stopped by its PID (its process group, launchers included).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ismrmrd

CLIENT_TIMEOUT_MS = 15_000  # the client's own wait; a run that misses its "connected" signal is retried
CLIENT_ATTEMPTS = 3


def gadgetron_prefix() -> Path | None:
    """The install prefix of a real Gadgetron: ``MRDSERVE_GADGETRON``, else the one whose ``gadgetron`` is on PATH."""
    given = os.environ.get("MRDSERVE_GADGETRON")
    if given:
        return Path(given) if (Path(given) / "bin" / "gadgetron").is_file() else None
    found = shutil.which("gadgetron")
    return Path(found).resolve().parents[1] if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s:g} s")


@dataclass
class ClientRun:
    """What one ``gadgetron_ismrmrd_client`` run gave: its output text and the images it wrote."""

    output: str
    images: list[ismrmrd.Image]
    seconds: float

    @property
    def errors(self) -> str:
        """The text after Gadgetron's "Errors received" (empty when the chain reported none)."""
        return self.output.split("Errors received:", 1)[1].strip() if "Errors received" in self.output else ""


def read_images(path: Path, group: str = "img") -> list[ismrmrd.Image]:
    if not path.is_file():
        return []
    dataset = ismrmrd.Dataset(str(path), group, create_if_needed=False)
    try:
        return [dataset.read_image(name, i) for name in dataset.list()
                for i in range(dataset.number_of_images(name))]
    finally:
        dataset.close()


class GadgetronServer:
    """``gadgetron -p PORT -E <storage stand-in>`` in its own process group; ``run`` sends a file through a chain."""

    def __init__(self, prefix: Path, work: Path, storage: Path, env: dict[str, str] | None = None) -> None:
        self.prefix, self.work = prefix, work
        self.port, storage_port = free_port(), free_port()
        self.env = {**os.environ, **(env or {}), "LD_LIBRARY_PATH": str(prefix / "lib"),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    "MRDSERVE_DEVICE": "cpu", "GADGETRON_EXTERNAL_LOG_LEVEL": "WARNING"}
        self.log = open(work / "gadgetron.log", "wb")  # noqa: SIM115  # closed by stop()
        self._storage = subprocess.Popen([sys.executable, str(storage), str(storage_port)], stdout=self.log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for_port(storage_port, self._storage)
        self.process = subprocess.Popen(
            [str(prefix / "bin" / "gadgetron"), "-p", str(self.port), "-E", f"http://127.0.0.1:{storage_port}"],
            cwd=work, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for_port(self.port, self.process)

    def run(self, data: Path, config: Path, *, query: bool = False, timeout_s: float = 90.0) -> ClientRun:
        """Send ``data`` through the chain XML ``config`` (sent as a local config); retried when the client misses
        its connection (a known race of gadgetron_ismrmrd_client), never by waiting longer."""
        out = self.work / f"{data.stem}-{config.stem}-{time.monotonic_ns()}.h5"
        command = [str(self.prefix / "bin" / "gadgetron_ismrmrd_client"), "-a", "127.0.0.1", "-p", str(self.port),
                   "-f", str(data), "-C", str(config), "-o", str(out), "-G", "img", "-t", str(CLIENT_TIMEOUT_MS)]
        if query:
            command.append("-q")
        output = ""
        for _ in range(CLIENT_ATTEMPTS):
            started = time.monotonic()
            try:
                done = subprocess.run(command, cwd=self.work, env=self.env, capture_output=True, text=True,
                                      timeout=timeout_s)
                output = done.stdout + done.stderr
            except subprocess.TimeoutExpired as expired:
                output = f"client timed out after {timeout_s:g} s: {expired.stdout or ''}"
            if "Bad file descriptor" not in output and "timed out" not in output:
                return ClientRun(output, read_images(out), time.monotonic() - started)
        return ClientRun(output, read_images(out), time.monotonic() - started)

    def launchers(self) -> list[int]:
        """PIDs of ``python -m gadgetron`` processes this server started that are still alive."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                group = os.getpgid(int(entry.name))
            except (OSError, ProcessLookupError):
                continue
            if b"gadgetron" in argv and b"-m" in argv and group == self.process.pid:
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        for process in (self.process, self._storage):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
        self.log.close()
