"""`mrdserve serve`: the REST API under uvicorn, with the engine started inside the app's lifespan.

The MRD streaming server joins this process with issue 6; until then ``--mrd-port`` is accepted and unused.
Settings come from flags, else ``MRDSERVE_*`` variables, else defaults (see ``service.config``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from service.config import ServiceConfig, add_config_arguments
from service.log import configure_logging, log_event


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run_serve(args: argparse.Namespace) -> int:
    try:
        config = ServiceConfig.from_env_and_args(args)
    except ValueError as error:
        print(f"mrdserve serve: {error}", file=sys.stderr)
        return 2
    import uvicorn

    from service.api import create_app

    configure_logging(config.log_level)
    log_event(logging.getLogger("mrdserve.serve"), "starting", host=config.host, port=config.port,
              artifacts=[str(p) for p in config.artifacts], device=config.device, max_batch=config.max_batch,
              queue_size=config.queue_size)
    server = uvicorn.Server(uvicorn.Config(create_app(config), host=config.host, port=config.port,
                                           log_config=None, access_log=False, timeout_graceful_shutdown=30,
                                           lifespan="on"))
    server.run()
    return 0
