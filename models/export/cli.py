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
    return parser


def run_export(args: argparse.Namespace) -> int:
    """Export, print where the artifact went and its equivalence figures; 1 with a message on refusal."""
    import json

    from models.export.export import export_checkpoint

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
    return 0
