"""Memory of `mrdserve serve` around hostile and normal requests: before, at peak and after each.

One server on free loopback ports (``--max-request-bytes`` = the budget, default 1 GiB) gets, one at a time: every
hostile file of ``models.data.hostile`` (built from a 64x64 8-coil file), a file whose acquisitions store far
more than their headers declare (``--oversized-mb``), a 3000-part multipart body, an MRD stream that buffers
~300 MB of unfinished slices and drops the connection, then normal requests (a 256x256 8-coil 4-slice Cartesian
file over REST as DICOM and over MRD, a radial file). Memory is the proportional set size of the server and its
children (the bounded file readers count), sampled every 10 ms from /proc while each runs; ``after`` is read
``--settle-s`` seconds (default 30) after the answer. A warm-up request of each normal kind runs first, so that
code loaded once (pydicom, the artifacts' first batches) is not counted as retained.

Run: ``.venv/bin/python bench/memory_service.py [--settle-s 30] [--budget-mb 1024]``. Last line:
``hostile_rss_retained_mb=<max> hostile_peak_mb=<max rise over before> normal_rss_retained_mb=<max>
budget_mb=<budget>``; targets: retained <= 200 MB, hostile peak <= budget + 300 MB.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrdserve.models.data.hostile import hostile_files  # noqa: E402
from mrdserve.models.data.ismrmrd_io import read_acquisitions  # noqa: E402
from mrdserve.service.mrd.client import stream_file  # noqa: E402
from mrdserve.service.mrd.protocol import MessageId, encode_config_file, encode_object, encode_text  # noqa: E402

MB = 1024**2


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant (the forkserver and the bounded file readers it forks)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def memory_mb(pid: int) -> float:
    """Proportional set size of the process tree (shared pages split between the processes sharing them), MB."""
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total / MB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def simulate(path: Path, *flags: str) -> Path:
    subprocess.run([str(ROOT / ".venv/bin/mrdserve"), "simulate", str(path), "--seed", "11", *flags], check=True,
                   capture_output=True)
    return path


def oversized(good: Path, path: Path, megabytes: int) -> Path:
    """``good`` whose last acquisition stores ``megabytes`` of samples while its header declares the usual few."""
    shutil.copy(good, path)
    with h5py.File(path, "a") as f:
        records = f["dataset/data"]
        record = records[records.shape[0] - 1]
        record["data"] = np.zeros(megabytes * MB // 4, np.float32)
        records[records.shape[0] - 1] = record
    return path


@dataclass
class Row:
    case: str
    kind: str  # hostile | normal
    outcome: str
    before_mb: float
    peak_mb: float
    after_mb: float

    @property
    def retained_mb(self) -> float:
        return self.after_mb - self.before_mb

    @property
    def rise_mb(self) -> float:
        return self.peak_mb - self.before_mb


class Server:
    def __init__(self, work: Path, budget_mb: int) -> None:
        self.port, self.mrd_port = free_port(), free_port()
        self.log = open(work / "server.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [str(ROOT / ".venv/bin/mrdserve"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--mrd-port", str(self.mrd_port), "--device", "cpu", "--spool-dir", str(work / "spool"),
             "--max-request-bytes", str(budget_mb * MB), "--log-level", "WARNING"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("mrdserve serve did not become ready")

    def rss_mb(self) -> float:
        return memory_mb(self.process.pid)

    def measure(self, case: str, kind: str, request: Callable[[], str], settle_s: float) -> Row:
        before = self.rss_mb()
        peak, done = [before], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], self.rss_mb())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            outcome = request()
        except Exception as error:  # a dropped connection is an outcome to report, not a crash of the bench
            outcome = f"{type(error).__name__}"
        time.sleep(min(1.0, settle_s))
        done.set()
        sampler.join()
        time.sleep(max(0.0, settle_s - 1.0))
        if self.process.poll() is not None:
            raise RuntimeError(f"the server died during {case}")
        return Row(case, kind, outcome, before, peak[0], self.rss_mb())

    def post(self, path: Path, **params: str) -> str:
        with open(path, "rb") as f:
            response = httpx.post(self.url + "/v1/reconstructions", params=params, files={"file": ("x.h5", f)},
                                  timeout=600)
        code = response.json().get("error", "") if response.status_code != 200 else ""
        return f"{response.status_code} {code}".strip()

    def post_raw(self, body: bytes, content_type: str) -> str:
        response = httpx.post(self.url + "/v1/reconstructions", content=body, headers={"content-type": content_type},
                              timeout=600)
        return f"{response.status_code} {response.json().get('error', '')}"

    def stream(self, path: Path) -> str:
        result = stream_file(path, "127.0.0.1", self.mrd_port)
        return f"{len(result.images)} images" + (f", {result.errors[0][:60]}" if result.errors else "")

    def unfinished_slices(self, megabytes: int) -> str:
        """Stream lines of six 512x512 32-coil slices, none complete, until ~``megabytes`` are buffered; drop."""
        import ismrmrd

        from mrdserve.models.data.ismrmrd_header import build_header, header_to_xml

        header = header_to_xml(build_header((512, 512), n_coils=32))
        line = ismrmrd.Acquisition.from_array(np.zeros((32, 512), np.complex64))
        line.center_sample = 256
        lines = megabytes * MB // (32 * 512 * 8)
        with socket.create_connection(("127.0.0.1", self.mrd_port), timeout=60) as sock:
            sock.sendall(encode_config_file("classical") + encode_text(header, MessageId.HEADER))
            for i in range(lines):
                line.idx.slice, line.idx.kspace_encode_step_1 = i % 6, i // 6
                sock.sendall(encode_object(line))
        return f"dropped after {megabytes} MB"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle-s", type=float, default=30.0, help="seconds between the answer and 'after'")
    parser.add_argument("--budget-mb", type=int, default=1024, help="the server's --max-request-bytes in MiB")
    parser.add_argument("--oversized-mb", type=int, default=512, help="samples stored beyond the declared ones")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mrdserve-memory-"))
    small = simulate(work / "small.h5", "--matrix", "64", "--coils", "8", "--acceleration", "2")
    normal = simulate(work / "normal.h5", "--matrix", "256", "--coils", "8", "--acceleration", "4", "--slices", "4")
    radial = simulate(work / "radial.h5", "--trajectory", "radial", "--matrix", "128", "--coils", "8",
                      "--acceleration", "4")
    hostile = dict(hostile_files(small, work / "hostile"))
    hostile["stored_beyond_declared"] = oversized(small, work / "oversized.h5", args.oversized_mb)
    read_acquisitions(small)  # the bench's own imports warm, not the server's
    server = Server(work, args.budget_mb)
    rows: list[Row] = []
    try:
        for warm in (lambda: server.post(normal), lambda: server.post(radial), lambda: server.stream(normal)):
            warm()
        for name, path in hostile.items():
            rows.append(server.measure(name, "hostile", lambda p=path: server.post(p), args.settle_s))
        boundary = "b"
        parts = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"x{i}\"\r\n\r\n\r\n"
                        for i in range(3000))
        rows.append(server.measure("multipart_3000_parts", "hostile", lambda: server.post_raw(
            (parts + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"), args.settle_s))
        rows.append(server.measure("mrd_unfinished_slice_dropped", "hostile", lambda: server.unfinished_slices(300),
                                   args.settle_s))
        rows.append(server.measure("rest_cartesian_256x4", "normal", lambda: server.post(normal), args.settle_s))
        rows.append(server.measure("rest_radial_128", "normal", lambda: server.post(radial), args.settle_s))
        rows.append(server.measure("mrd_cartesian_256x4", "normal", lambda: server.stream(normal), args.settle_s))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'case':32s} {'kind':8s} {'outcome':28s} {'before':>8s} {'peak':>8s} {'after':>8s} {'rise':>7s} "
          f"{'kept':>7s}  (MB)")
    for row in rows:
        print(f"{row.case:32s} {row.kind:8s} {row.outcome[:28]:28s} {row.before_mb:8.0f} {row.peak_mb:8.0f} "
              f"{row.after_mb:8.0f} {row.rise_mb:7.0f} {row.retained_mb:7.0f}")
    hostile_rows = [r for r in rows if r.kind == "hostile"]
    normal_rows = [r for r in rows if r.kind == "normal"]
    print(f"hostile_rss_retained_mb={max(r.retained_mb for r in hostile_rows):.0f} "
          f"hostile_peak_mb={max(r.rise_mb for r in hostile_rows):.0f} "
          f"normal_rss_retained_mb={max(r.retained_mb for r in normal_rows):.0f} budget_mb={args.budget_mb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
