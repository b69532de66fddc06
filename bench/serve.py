"""REST serving vs the engine called directly, on loopback: per-slice latency and throughput.

Workload: simulated radial 2D slices (96x96, 8 coils, R=4) that the bundled demo NC-PDNet serves, PNG output.
Direct (in this process): the engine's ``reconstruct`` on samples in memory, and the same pipeline the REST
endpoint runs without HTTP (read file -> engine -> package). REST: ``mrdserve serve`` in a subprocess, POSTs
with httpx. REST overhead = REST p50 - (read + engine + package) p50, i.e. what HTTP adds. Throughput: served at
concurrency 1, 4, 16 vs the engine's offline batched throughput (``reconstruct_sync``, batches of max_batch).
Last line: ``rest_overhead_ms_p50=<x> served_throughput_ratio=<x>``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrdserve.models.data.ismrmrd_io import read_ismrmrd  # noqa: E402
from mrdserve.service.config import ServiceConfig  # noqa: E402
from mrdserve.service.engine.engine import Engine  # noqa: E402
from mrdserve.service.rest.processing import ingest, package  # noqa: E402

LATENCY_REPS = 30
THROUGHPUT_REQUESTS = 32
CONCURRENCY = (1, 4, 16)
HOST = "127.0.0.1"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def simulate(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "mrdserve.service.cli", "simulate", str(path), "--trajectory", "radial",
                    "--coils",
                    "8", "--acceleration", "4", "--matrix", "96", "--seed", "7"], cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    return path


class Direct:
    """The engine in this process (warmed up, own event loop): engine-only and read + engine + package timings."""

    def __init__(self, config: ServiceConfig, path: Path, work: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine = Engine(config)
        self.loop.run_until_complete(self.engine.start())
        self.path, self.work, self.config = path, work, config
        self.samples = read_ismrmrd(path)[1]
        self.label = self.loop.run_until_complete(self.engine.reconstruct(self.samples))[0].label

    def engine_only(self) -> float:
        started = time.perf_counter()
        self.loop.run_until_complete(self.engine.reconstruct(self.samples))
        return time.perf_counter() - started

    def pipeline(self, i: int) -> float:
        started = time.perf_counter()
        header, samples = ingest(self.path, "dataset", self.config.budget)
        results = self.loop.run_until_complete(self.engine.reconstruct(samples))
        package(results, header, "png", self.work / f"direct{i}")
        return time.perf_counter() - started

    def offline_slices_per_s(self) -> float:
        batch = [self.samples[0]] * THROUGHPUT_REQUESTS
        started = time.perf_counter()
        self.engine.reconstruct_sync(batch)
        return THROUGHPUT_REQUESTS / (time.perf_counter() - started)

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.shutdown())
        self.loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(path: Path, spool: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MRDSERVE_")}
    server = subprocess.Popen([sys.executable, "-m", "mrdserve.service.cli", "serve", "--host", HOST,
                               "--port", str(port),
                               "--mrd-port", str(free_port()), "--spool-dir", str(spool), "--log-level", "WARNING",
                               "--device", "cpu"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}")
        time.sleep(0.2)
    server.kill()
    raise TimeoutError("server not ready within 120 s")


def measure(path: Path, tmp_path: Path) -> dict[str, object]:
    """Latencies interleaved (engine, pipeline, REST per round) so that machine noise hits all three alike."""
    config = ServiceConfig(device="cpu", spool_dir=tmp_path / "spool-direct")
    server, url = start_server(path, tmp_path / "spool-rest")
    direct = Direct(config, path, tmp_path)
    payload = path.read_bytes()
    try:
        with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=32)) as client:
            def post() -> float:
                started = time.perf_counter()
                response = client.post(url + "/v1/reconstructions", params={"format": "png"},
                                       files={"file": ("scan.h5", payload)})
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text}")
                return elapsed

            for i in range(3):
                post(), direct.pipeline(i), direct.engine_only()
            times: dict[str, list[float]] = {"engine": [], "pipeline": [], "rest": []}
            for i in range(LATENCY_REPS):
                times["engine"].append(direct.engine_only())
                times["pipeline"].append(direct.pipeline(i))
                times["rest"].append(post())
            offline = [direct.offline_slices_per_s()]
            throughput = {}
            for concurrency in CONCURRENCY:
                with ThreadPoolExecutor(concurrency) as pool:
                    started = time.perf_counter()
                    list(pool.map(lambda _: post(), range(THROUGHPUT_REQUESTS)))
                    throughput[concurrency] = THROUGHPUT_REQUESTS / (time.perf_counter() - started)
            offline.append(direct.offline_slices_per_s())
    finally:
        direct.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return {**times, "throughput": throughput, "offline": statistics.mean(offline), "label": direct.label,
            "max_batch": config.max_batch}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        path = simulate(tmp_path / "radial.h5")
        measured = measure(path, tmp_path)
    ms = {name: [1000 * v for v in measured[name]] for name in ("engine", "pipeline", "rest")}
    print(f"workload: 1 radial slice per request (96x96, 8 coils, R=4), artifact {measured['label']}, PNG output, "
          f"max_batch {measured['max_batch']}, CPUs {os.cpu_count()}")
    print(f"{'per-slice latency (ms)':<44}{'p50':>9}{'p95':>9}")
    for name, title in (("engine", "engine.reconstruct (samples in memory)"),
                        ("pipeline", "read + engine + package (in process)"), ("rest", "REST POST over loopback")):
        print(f"{title:<44}{statistics.median(ms[name]):>9.2f}{percentile(ms[name], 0.95):>9.2f}")
    overhead = statistics.median(ms["rest"]) - statistics.median(ms["pipeline"])
    over_engine = statistics.median(ms["rest"]) - statistics.median(ms["engine"])
    print(f"REST overhead vs in-process pipeline (HTTP, upload, response): {overhead:.2f} ms at p50")
    print(f"REST latency minus engine-only latency (adds file read + packaging): {over_engine:.2f} ms at p50")
    offline = float(measured["offline"])
    served = measured
    print(f"\n{'throughput (slices/s)':<30}{'value':>10}{'ratio to offline':>18}")
    print(f"{'offline batched (engine)':<30}{offline:>10.2f}{1.0:>18.2f}")
    for concurrency, value in served["throughput"].items():
        print(f"{f'served, concurrency {concurrency}':<30}{value:>10.2f}{value / offline:>18.2f}")
    ratio = served["throughput"][16] / offline
    print(f"rest_overhead_ms_p50={overhead:.2f} served_throughput_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
