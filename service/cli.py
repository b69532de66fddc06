"""The `mrdserve` command line: one entry point, one subcommand per job (see ARCHITECTURE.md, Contracts)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from models.data.simulate import add_simulate_arguments, run_simulate

NOT_YET = {
    "serve": "the REST API and MRD server (issues 5 and 6)",
    "train": "the offline trainer (issue 4)",
    "export": "artifact export (issue 4)",
    "evaluate": "evaluation against the classical baselines (issue 4)",
    "models": "the artifact registry (issue 5)",
}


def _not_yet(name: str) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        print(f"mrdserve {name}: not yet available; it arrives with {NOT_YET[name]}.", file=sys.stderr)
        return 2

    return run


def _add_recon(sub: argparse._SubParsersAction) -> None:
    from service.offline_recon import add_recon_arguments, run_recon

    parser = sub.add_parser("recon", help="reconstruct an ISMRMRD or fastMRI file offline",
                            description="Reconstruct every slice of INPUT and write images to OUTDIR.")
    add_recon_arguments(parser)
    parser.set_defaults(handler=run_recon)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrdserve", description=(
        "Online MRI reconstruction: learned unrolled networks served behind a Gadgetron-compatible MRD server, "
        "a Gadgetron gadget and a REST API."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    simulate = sub.add_parser("simulate", help="write a synthetic ISMRMRD (or fastMRI) file",
                              description="Simulate a multicoil acquisition of a realistic phantom.")
    add_simulate_arguments(simulate)
    simulate.set_defaults(handler=run_simulate)

    _add_recon(sub)

    for name, what in NOT_YET.items():
        stub = sub.add_parser(name, help=f"(not yet available: {what})", description=f"Not yet available: {what}.")
        stub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        stub.set_defaults(handler=_not_yet(name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mrdserve` console script."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
