"""Inline latency of the MRD server: per slice, last acquisition sent -> image received, vs the engine's own time.

An engine with the bundled demo artifacts and an MRD server run on loopback in this process (their own thread
and event loop, as in `mrdserve serve`). A client streams simulated Cartesian and radial scans (96x96, 8 coils,
R=4) the way a scanner does: slice after slice, each slice's image awaited before the next slice's lines. Per
slice it records the latency and the engine's time for that slice from the server's TEXT line (preparation +
queue + inference); overhead = latency - engine time is what the streaming path adds (assembly of the slice:
oversampling removal and prewhitening; the image header and meta; the socket both ways). As a cross-check the
same samples go through ``engine.reconstruct`` directly in the same run.

With a real Gadgetron (``MRDSERVE_GADGETRON`` = its prefix, or on PATH; ``bash ../shared/gadgetron/install.sh``)
the same scans also go through Gadgetron's own port and a raw ``<execute>`` chain with our gadget
(``mrdserve_xpdnet.xml`` / ``mrdserve_ncpdnet.xml``): the Gadgetron hop is its per-slice latency minus the MRD
server's (p50/p95, the first slice apart: it includes starting the gadget's Python process).

    .venv/bin/python bench/inline.py [--slices 24] [--device cpu]

Last line: ``inline_overhead_ms_p50=<x> ... [gadgetron_hop_ms_p50=<x> gadgetron_hop_ms_p95=<x> ...]``.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ismrmrd
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrdserve.gadgets.gadgetron_host import GadgetronServer, gadgetron_prefix
from mrdserve.models.data.ismrmrd_io import read_acquisitions, read_ismrmrd
from mrdserve.models.data.simulate import simulate_to_file
from mrdserve.service.config import ServiceConfig
from mrdserve.service.engine.engine import Engine
from mrdserve.service.engine.engine_thread import EngineThread
from mrdserve.service.mrd.protocol import (
    MessageId,
    encode_close,
    encode_config_file,
    encode_object,
    encode_text,
    read_message_blocking,
)
from mrdserve.service.mrd.server import MrdServer

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "gadgets" / "config"
GADGETRON_CHAINS = {"cartesian": "mrdserve_xpdnet.xml", "radial": "mrdserve_ncpdnet.xml"}
STORAGE_STANDIN = ROOT.parent / "shared" / "gadgetron" / "storage_standin.py"
_STAGE = re.compile(r"(preparation|queue|inference)=([0-9.]+)ms")


class Background:
    """Engine + MRD server on their own event loop in a thread."""

    def __init__(self, config: ServiceConfig) -> None:
        self.engine = Engine(config)
        self.thread = EngineThread(self.engine)
        self.server = MrdServer(self.engine, HOST, 0)
        self.call(self.server.start())

    def call(self, coroutine, timeout: float = 600):
        return self.thread.call(coroutine, timeout)

    def stop(self) -> None:
        self.call(self.server.stop(grace_s=5))
        self.thread.stop()


def slice_groups(path: Path) -> tuple[str, list[list[ismrmrd.Acquisition]]]:
    """The header and the acquisitions of a file, one group per slice (noise scans with the first)."""
    xml, acquisitions = read_acquisitions(path)
    groups: list[list[ismrmrd.Acquisition]] = [[]]
    for acq in acquisitions:
        groups[-1].append(acq)
        if acq.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE):
            groups.append([])
    return xml, [g for g in groups if g]


def stream_slice_by_slice(port: int, path: Path) -> list[tuple[float, float, str]]:
    """(latency s, engine s, label) per slice, each slice's image awaited before the next slice is sent."""
    xml, groups = slice_groups(path)
    rows = []
    with socket.create_connection((HOST, port), timeout=120) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = sock.makefile("rb")
        sock.sendall(encode_config_file("default.xml") + encode_text(xml, MessageId.HEADER))
        for group in groups:
            sock.sendall(b"".join(encode_object(acq) for acq in group[:-1]))
            sock.sendall(encode_object(group[-1]))
            sent = time.perf_counter()
            received = None
            while True:
                message = read_message_blocking(stream.read)
                if message.id == MessageId.IMAGE and received is None:
                    received = time.perf_counter()
                elif message.id == MessageId.TEXT and message.value.startswith("ERROR"):
                    raise RuntimeError(message.value)
                elif message.id == MessageId.TEXT and received is not None and "inference=" in message.value:
                    stages = dict(_STAGE.findall(message.value))
                    engine_s = sum(float(v) for v in stages.values()) / 1000
                    rows.append((received - sent, engine_s, message.value.split(": ")[2].split(";")[0]))
                    break
        sock.sendall(encode_close())
        while read_message_blocking(stream.read).id != MessageId.CLOSE:
            pass
    return rows


def gadgetron_latencies(port: int, path: Path, chain: Path) -> list[float]:
    """Seconds per slice, last acquisition sent -> image received, through Gadgetron's port and ``chain``."""
    xml, groups = slice_groups(path)
    latencies = []
    with socket.create_connection((HOST, port), timeout=120) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = sock.makefile("rb")
        sock.sendall(encode_text(chain.read_text(), MessageId.CONFIG_TEXT) + encode_text(xml, MessageId.HEADER))
        for group in groups:
            sock.sendall(b"".join(encode_object(acq) for acq in group))
            sent = time.perf_counter()
            while True:
                message = read_message_blocking(stream.read)
                if message.id == MessageId.IMAGE:
                    latencies.append(time.perf_counter() - sent)
                    break
                if message.id in (MessageId.ERROR, MessageId.CLOSE):
                    raise RuntimeError(f"Gadgetron: {message.value}")
        sock.sendall(encode_close())
        while read_message_blocking(stream.read).id != MessageId.CLOSE:
            pass
    return latencies


def gadgetron_rows(work: Path, scans: dict[str, Path], mrd_p50_ms: dict[str, float]) -> dict[str, float]:
    """The Gadgetron row: per scan, latency through a real Gadgetron chain vs through our MRD server."""
    prefix = gadgetron_prefix()
    if prefix is None or not STORAGE_STANDIN.is_file():
        print("no Gadgetron (MRDSERVE_GADGETRON or gadgetron on PATH, and ../shared/gadgetron): row skipped")
        return {}
    server = GadgetronServer(prefix, work, STORAGE_STANDIN)
    figures: dict[str, float] = {}
    hops: list[float] = []
    try:
        print(f"{'scan':<10} {'Gadgetron chain':<28} {'first slice':>12} {'latency p50':>12} {'latency p95':>12} "
              f"{'hop p50':>9}")
        for trajectory, path in scans.items():
            chain = CONFIGS / GADGETRON_CHAINS[trajectory]
            latencies = [1000 * s for s in gadgetron_latencies(server.port, path, chain)]
            steady = latencies[1:]
            hop = [lat - mrd_p50_ms[trajectory] for lat in steady]
            hops += hop
            print(f"{trajectory:<10} {chain.name:<28} {latencies[0]:>9.0f} ms {statistics.median(steady):>9.1f} ms "
                  f"{percentile(steady, 95):>9.1f} ms {statistics.median(hop):>6.1f} ms")
            figures[f"gadgetron_{trajectory}_first_slice_ms"] = latencies[0]
            figures[f"gadgetron_{trajectory}_latency_ms_p50"] = statistics.median(steady)
    finally:
        server.stop()
    print("hop = latency through Gadgetron + <execute> gadget - latency through our MRD server (p50), per slice")
    return {"gadgetron_hop_ms_p50": statistics.median(hops), "gadgetron_hop_ms_p95": percentile(hops, 95),
            **figures}


def direct_engine_times(background: Background, path: Path) -> list[float]:
    """Wall time of ``engine.reconstruct`` per sample of the same file, one at a time."""
    _, samples = read_ismrmrd(path)
    times = []
    for sample in samples:
        started = time.perf_counter()
        background.call(background.engine.reconstruct([sample]))
        times.append(time.perf_counter() - started)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=24, help="slices per scan (default 24)")
    parser.add_argument("--device", default="cpu", help="engine device (default cpu)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mrdserve-inline-"))
    background = Background(ServiceConfig(device=args.device, spool_dir=work / "spool"))
    summary: dict[str, float] = {}
    all_overheads: list[float] = []
    print(f"device {background.engine.device}, {args.slices} slices per scan, 96x96, 8 coils, R=4, loopback")
    print(f"{'scan':<10} {'artifact':<28} {'latency p50':>12} {'engine p50':>11} {'overhead p50':>13} "
          f"{'overhead p90':>13} {'direct engine p50':>18}")
    scans: dict[str, Path] = {}
    try:
        for trajectory in ("cartesian", "radial"):
            path = scans[trajectory] = work / f"{trajectory}.h5"
            simulate_to_file(path, trajectory, coils=8, acceleration=4, matrix=96, slices=args.slices, seed=11)
            stream_slice_by_slice(background.server.port, path)  # a first pass warms the per-trajectory caches
            rows = stream_slice_by_slice(background.server.port, path)
            direct = direct_engine_times(background, path)
            latencies = [1000 * r[0] for r in rows]
            engine = [1000 * r[1] for r in rows]
            overheads = [lat - eng for lat, eng in zip(latencies, engine, strict=True)]
            all_overheads += overheads
            labels = ",".join(sorted({r[2] for r in rows}))
            print(f"{trajectory:<10} {labels:<28} {statistics.median(latencies):>9.1f} ms "
                  f"{statistics.median(engine):>8.1f} ms {statistics.median(overheads):>10.2f} ms "
                  f"{percentile(overheads, 90):>10.2f} ms "
                  f"{1000 * statistics.median(direct):>15.1f} ms")
            summary[f"{trajectory}_latency_ms_p50"] = statistics.median(latencies)
            summary[f"{trajectory}_engine_ms_p50"] = statistics.median(engine)
            summary[f"{trajectory}_overhead_ms_p50"] = statistics.median(overheads)
            summary[f"{trajectory}_direct_engine_ms_p50"] = 1000 * statistics.median(direct)
    finally:
        background.stop()
    gadgetron = gadgetron_rows(work, scans, {t: summary[f"{t}_latency_ms_p50"] for t in scans})
    summary.update(gadgetron)
    head = statistics.median(all_overheads)
    print(f"overhead = latency - (preparation + queue + inference) per slice; target <= 10 ms at p50: "
          f"{'met' if head <= 10 else 'NOT met'}")
    figures = " ".join(f"{key}={value:.2f}" for key, value in summary.items())
    print(f"inline_overhead_ms_p50={head:.2f} inline_overhead_ms_p90={percentile(all_overheads, 90):.2f} {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
