"""`mrdserve serve`: the REST API (uvicorn) and the MRD streaming server in one process, one event loop, one engine.

The engine is built here and handed to ``create_app``, whose lifespan starts it (load, warm up) and shuts it
down; the MRD server listens on ``--mrd-port`` from the start, and sessions that arrive before the engine is
ready wait for it (bounded). On SIGTERM/SIGINT the MRD server stops accepting and lets accepted streams finish
(up to the graceful timeout) *before* uvicorn's shutdown stops the engine, and the process exits 0.
Settings come from flags, else ``MRDSERVE_*`` variables, else defaults (see ``service.config``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from types import FrameType
from typing import Any

from mrdserve.service.config import ServiceConfig, add_config_arguments
from mrdserve.service.log import configure_logging, log_event
from mrdserve.service.spool import SpoolInUseError

GRACEFUL_SHUTDOWN_S = 30

log = logging.getLogger("mrdserve.serve")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def _make_server(config: ServiceConfig, app: Any, mrd: Any) -> Any:
    import uvicorn

    from mrdserve.service.slow_clients import guarded_h11

    class Server(uvicorn.Server):
        """uvicorn's server, draining the MRD streams before the lifespan stops the engine."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises captured signals after a graceful stop, which would end the process with
            # -SIGTERM; a requested, completed shutdown is a success, so it exits 0 instead.
            if sig in (signal.SIGTERM, signal.SIGINT) and not self.force_exit:
                self._captured_signals.clear()

        async def shutdown(self, sockets: Any = None) -> None:
            app.state.drain()
            await mrd.stop(grace_s=GRACEFUL_SHUTDOWN_S)
            await super().shutdown(sockets)

    return Server(uvicorn.Config(app, host=config.host, port=config.port, log_config=None, access_log=False,
                                 timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="on",
                                 http=guarded_h11(config.read_timeout_s), limit_concurrency=config.max_connections))


async def serve(config: ServiceConfig) -> None:
    """Run both servers until a signal; the MRD server binds first so a bad port fails fast."""
    from mrdserve.service.api import create_app
    from mrdserve.service.engine.engine import Engine
    from mrdserve.service.mrd.server import MrdServer
    from mrdserve.service.spool import JobSpool

    spool = JobSpool(config.spool_dir, config.spool_max_bytes, config.result_ttl_s)
    spool.acquire()  # before binding: a second instance on this spool stops here
    engine = Engine(config)
    mrd = MrdServer(engine, config.host, config.mrd_port, budget=config.budget, read_timeout_s=config.read_timeout_s,
                    max_connections=config.max_connections, allow=config.mrd_networks)
    await mrd.start()
    server = _make_server(config, create_app(config, engine, spool), mrd)
    try:
        await server.serve()
    finally:
        await mrd.stop(grace_s=0)  # already drained unless uvicorn failed to start


def run_serve(args: argparse.Namespace) -> int:
    try:
        config = ServiceConfig.from_env_and_args(args)
    except ValueError as error:
        print(f"mrdserve serve: {error}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    log_event(log, "starting", host=config.host, port=config.port, mrd_port=config.mrd_port,
              artifacts=[str(p) for p in config.artifacts], device=config.device, max_batch=config.max_batch,
              queue_size=config.queue_size)
    try:
        asyncio.run(serve(config))
    except (OSError, SpoolInUseError) as error:  # e.g. a port in use, a spool another instance owns
        print(f"mrdserve serve: {error}", file=sys.stderr)
        return 1
    return 0
