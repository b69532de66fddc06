"""The `mrdserve` command line: one entry point, one subcommand per job (see ARCHITECTURE.md, Contracts).

Each subcommand lives in the module that owns its job and is imported only when that subcommand runs, so the
runtime never loads training or export code: `train`, `evaluate`, `benchmark` and `export` are offline tools from
`models.training` and `models.export`, while `serve`, `recon` and `models` use only the runtime.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand: where its argument builder and handler live, and a one-line help."""

    module: str
    add_arguments: str
    run: str
    help: str
    description: str = ""


COMMANDS: dict[str, Command] = {
    "simulate": Command("mrdserve.models.data.simulate", "add_simulate_arguments", "run_simulate",
                        "write a synthetic ISMRMRD (or fastMRI) file",
                        "Simulate a multicoil acquisition of a realistic phantom (2D or 3D)."),
    "recon": Command("mrdserve.service.offline_recon", "add_recon_arguments", "run_recon",
                     "reconstruct an ISMRMRD or fastMRI file offline",
                     "Reconstruct every slice of INPUT and write images to OUTDIR."),
    "train": Command("mrdserve.models.training.cli", "add_train_arguments", "run_train",
                     "train a network from a YAML config (offline trainer)"),
    "evaluate": Command("mrdserve.models.training.cli", "add_evaluate_arguments", "run_evaluate",
                        "compare a trained model with the classical baselines on a data set"),
    "denoise": Command("mrdserve.models.training.denoise_cli", "add_denoise_arguments", "run_denoise",
                       "denoise a magnitude image (.npy, PNG, NIfTI, DICOM) with a trained denoiser (Learnlets)",
                       "Denoise every 2D slice of INPUT with MODEL (a denoiser checkpoint or TorchScript file); "
                       "without --sigma the noise level is estimated (Donoho's MAD rule) and printed."),
    "benchmark": Command("mrdserve.models.training.cli", "add_benchmark_arguments", "run_benchmark",
                         "train and compare the unrolled networks under one protocol (the thesis's benchmark)",
                         "Train every network of CONFIG with the same optimiser, loss, data and step budget, then "
                         "score PSNR/SSIM on held-out slices and time inference side by side: a table, a figure "
                         "and JSON in OUT, the headline figures on the last line."),
    "export": Command("mrdserve.models.export.cli", "add_export_arguments", "run_export",
                      "export a checkpoint as an artifact (TorchScript + ONNX + manifest)"),
    "validate": Command("mrdserve.models.export.cli", "add_validate_arguments", "run_validate",
                        "validate an artifact against the classical methods on a held-out grid (its envelope)",
                        "Simulate held-out data on a grid of matrix, coils, acceleration and noise, reconstruct it "
                        "with the artifact and every classical method, and store where the artifact wins in its "
                        "manifest: the runtime serves it automatically only there."),
    "models": Command("mrdserve.service.registry_cli", "add_models_arguments", "run_models",
                      "list the artifacts the registry sees"),
    "serve": Command("mrdserve.service.serve", "add_serve_arguments", "run_serve",
                     "run the REST API and the MRD streaming server",
                     "Serve reconstructions over HTTP (REST API, OpenAPI at /docs) and the MRD streaming protocol "
                     "(port 9002) with the configured artifacts."),
    "stream": Command("mrdserve.service.mrd.client", "add_stream_arguments", "run_stream",
                      "stream an ISMRMRD file to an MRD server and save the images",
                      "Send the acquisitions of INPUT to an MRD server (ours or Gadgetron) and write the images."),
    "openrecon": Command("mrdserve.service.openrecon", "add_openrecon_arguments", "run_openrecon",
                         "write the Siemens OpenRecon image label (metadata, UI parameters) and Dockerfile stage",
                         "Describe this MRD server for OpenRecon: raw data in, images out, the UI parameters "
                         "(artifact, classical method, image data type, series index), as the base64 JSON image "
                         "label OpenRecon reads and a Dockerfile stage that carries it."),
}

def build_parser(load: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; only the subcommands named in ``load`` (all when None) get their arguments imported."""
    parser = argparse.ArgumentParser(prog="mrdserve", description=(
        "Online MRI reconstruction: learned unrolled networks served behind a Gadgetron-compatible MRD server, "
        "a Gadgetron gadget and a REST API."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.help, description=command.description or command.help + ".")
        if load is None or name in load:
            module = importlib.import_module(command.module)
            getattr(module, command.add_arguments)(child)
            child.set_defaults(handler=getattr(module, command.run))
    return parser


def _requested(argv: Sequence[str]) -> list[str]:
    return [arg for arg in argv if arg in COMMANDS][:1]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mrdserve` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(load=_requested(argv)).parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
