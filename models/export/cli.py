"""`mrdserve export CHECKPOINT -o OUT_DIR`: write a verified artifact from a trainer checkpoint."""

from __future__ import annotations

import argparse
import sys


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mrdserve export``."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="trainer checkpoint (.pt, mrdserve-checkpoint/1)")
    parser.add_argument("-o", "--out-dir", required=True, metavar="OUT_DIR",
                        help="directory in which the artifact directory <name>-<version>/ is created")
    parser.add_argument("--name", default=None, help="artifact name (default: the training config's name)")
    parser.add_argument("--version", default=None, help="artifact version (default: 0.<training step>)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest relative L2 error of TorchScript/ONNX vs eager PyTorch (default 1e-4)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, 18 or newer (default 18)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing artifact directory")
    parser.add_argument("--envelope", choices=("standard", "quick", "none"), default="standard",
                        help="validation grid run after export (see `mrdserve validate`); 'none' leaves the "
                             "artifact without an envelope, so it is served only when named (default standard)")
    return parser


def add_validate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mrdserve validate``."""
    parser.add_argument("artifact", metavar="ARTIFACT_DIR", help="artifact directory (<name>-<version>/)")
    parser.add_argument("--grid", choices=("standard", "quick"), default="standard",
                        help="standard: matrix 96/160/256, coils 2/8/16, R 1/2/4/8, two noise levels, 2 slices "
                             "per cell (non-Cartesian: R 2/4/8, 1 slice; minutes on a CPU); "
                             "quick: a smoke-test grid")
    return parser


def run_validate(args: argparse.Namespace) -> int:
    """Write the envelope into the artifact's manifest and print it; 1 with a message on refusal."""
    from mrdserve.models.export.envelope import summary, write_envelope

    try:
        manifest = write_envelope(args.artifact, args.grid)
    except ValueError as exc:
        print(f"mrdserve validate: {exc}", file=sys.stderr)
        return 1
    envelope = manifest["validation"]["envelope"]
    print(summary(envelope))
    served = sum(cell["serve"] for cell in envelope["cells"])
    print(f"{args.artifact}: served automatically in {served} of {len(envelope['cells'])} validated cells")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export, print where the artifact went and its equivalence figures; 1 with a message on refusal."""
    import json

    from mrdserve.models.export.export import export_checkpoint

    try:
        target = export_checkpoint(args.checkpoint, args.out_dir, name=args.name, version=args.version,
                                   tolerance=args.tolerance, opset=args.opset, overwrite=args.overwrite)
    except ValueError as exc:
        print(f"mrdserve export: {exc}", file=sys.stderr)
        return 1
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    figures = manifest["equivalence"]
    print(f"wrote {target} (torchscript max rel {figures['torchscript_max_rel']:.2e}, "
          f"onnx max rel {figures['onnx_max_rel']:.2e}, tolerance {figures['tolerance']:.1e})")
    if args.envelope == "none":
        print("no validation envelope: the artifact is served only when named")
        return 0
    args.artifact, args.grid = str(target), args.envelope
    code = run_validate(args)
    if code != 0:
        print(f"mrdserve export: {target} was written but has no validation envelope; run `mrdserve validate "
              f"{target}` once the problem above is fixed", file=sys.stderr)
    return code
