import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrdserve.service.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrdserve.service.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_help_lists_every_subcommand():
    result = _run("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: mrdserve" in capsys.readouterr().out


def test_simulate_then_recon_writes_pngs(tmp_path):
    path = tmp_path / "sim.h5"
    assert main(["simulate", str(path), "--trajectory", "cartesian", "--coils", "4", "--acceleration", "2",
                 "--matrix", "64", "--seed", "1"]) == 0
    out = tmp_path / "out"
    assert main(["recon", str(path), "-o", str(out), "--format", "png"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 1
    image = np.asarray(Image.open(pngs[0]))
    assert image.shape == (64, 64)
    assert image.dtype == np.uint8 and image.max() == 255 and image.std() > 20


def test_recon_reports_missing_and_unreadable_input(tmp_path, capsys):
    assert main(["recon", str(tmp_path / "absent.h5"), "-o", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    text = tmp_path / "notes.h5"
    text.write_text("not an HDF5 file")
    assert main(["recon", str(text), "-o", str(tmp_path), "--format", "dicom"]) == 2
    assert "is not HDF5" in capsys.readouterr().err


def test_runtime_commands_do_not_load_training_code():
    code = ("import sys; from mrdserve.service.cli import build_parser; build_parser(load=['recon', 'models']); "
            "print(any(m.startswith(tuple('mrdserve.models.' + p for p in ('training', 'nets', 'export'))) "
            "for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
