"""``python -m mrdserve.gadgets listen [--port 9100]`` (for ``<connect port=.../>``),
``python -m mrdserve.gadgets connect PORT`` (what Gadgetron's ``<execute>`` launcher does, without the ``gadgetron``
package) and ``python -m mrdserve.gadgets install-guard [--remove]`` (``gadgets.launcher_guard``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mrdserve.gadgets.connection import DEFAULT_READ_TIMEOUT_S
from mrdserve.gadgets.launcher_guard import write_guard
from mrdserve.gadgets.listen import Listener, connect_back, preload
from mrdserve.gadgets.settings import GadgetSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mrdserve.gadgets",
                                     description="mrdserve's Gadgetron external gadget")
    commands = parser.add_subparsers(dest="command", required=True)
    listen = commands.add_parser("listen", help="accept Gadgetron connections (<connect port=.../>)")
    listen.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    listen.add_argument("--port", type=int, default=9100, help="port (default 9100; 0: any free port)")
    listen.add_argument("--max-connections", type=int, default=None, help="exit after serving this many")
    connect = commands.add_parser("connect", help="connect to Gadgetron's port and serve one stream")
    connect.add_argument("port", type=int)
    connect.add_argument("--host", default="localhost")
    guard = commands.add_parser("install-guard", help="guard Gadgetron's `python -m gadgetron` launcher against "
                                                       "spinning when Gadgetron closes during the handshake")
    guard.add_argument("--remove", action="store_true", help="remove the guard instead")
    guard.add_argument("--site-packages", type=Path, default=None,
                       help="where to write it (default: this environment's site-packages)")
    for sub in (listen, connect):
        sub.add_argument("--artifact", default=None, help="artifact name or label (default: chosen from header)")
        sub.add_argument("--artifacts", default=None, help="artifact directories, ':'-separated")
        sub.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
        sub.add_argument("--read-timeout-s", type=float, default=DEFAULT_READ_TIMEOUT_S,
                         help="longest wait for the next message (default 300 s)")
        sub.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "install-guard":
        path = write_guard(args.site_packages, remove=args.remove)
        print(f"{'removed' if args.remove else 'wrote'} {path}")
        return 0
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    given = {name: getattr(args, name) for name in ("artifact", "artifacts", "device") if getattr(args, name)}
    # Command-line settings apply only when given; otherwise each stream's CONFIG decides.
    settings = GadgetSettings.from_properties(given) if given else None
    preload(settings)  # streams find it in the per-process engine cache (unless their CONFIG asks otherwise)
    if args.command == "connect":
        return 0 if connect_back(args.port, args.host, settings=settings,
                                 read_timeout_s=args.read_timeout_s) else 1
    listener = Listener(args.host, args.port, settings=settings, read_timeout_s=args.read_timeout_s)
    print(f"mrdserve gadget listening on {args.host}:{listener.port}", flush=True)
    try:
        listener.serve_forever(args.max_connections)
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
