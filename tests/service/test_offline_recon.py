"""`mrdserve recon` with the bundled demo artifacts: the right artifact is chosen, images are sensible, and
data no artifact fits falls back to the classical baseline, said in the output name."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrdserve.models.data.baseline import CLASSICAL_METHODS, classical_reconstruction
from mrdserve.models.data.ismrmrd_io import read_ismrmrd
from mrdserve.models.data.metrics import psnr, ssim
from mrdserve.models.data.simulate import read_ground_truth, simulate_to_file
from mrdserve.service.artifacts import BUNDLED_ARTIFACTS, choose, load_artifacts
from mrdserve.service.cli import main
from mrdserve.service.engine.choice import Choice
from mrdserve.service.offline_recon import offline_engine


@pytest.fixture(scope="module")
def artifacts():
    found = load_artifacts([BUNDLED_ARTIFACTS])
    assert {a.manifest.task for a in found} >= {"cartesian2d-multicoil", "noncartesian2d-multicoil"}
    return found


@pytest.fixture(scope="module")
def engine():
    return offline_engine([BUNDLED_ARTIFACTS])


def _reconstruct(engine, sample, artifact=None):
    """(image, label) as `mrdserve recon` makes them: the label is the artifact's, or the classical method."""
    [result] = engine.reconstruct_sync([sample], Choice.of(artifact))
    return result.image, result.method or result.label


def _scaled(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return image * float((image * reference).sum() / (image * image).sum())


# Margins of each demo network, named explicitly, over CG-SENSE on this held-out file (measured at seed 12345):
# NC-PDNet gains 1-5 dB and more than 0.2 SSIM; the XPDNet 0.7-2 dB and 0.1-0.15 SSIM.
MARGINS = {"cartesian": (0.5, 0.08), "radial": (0.5, 0.1), "spiral": (0.5, 0.1)}  # (dB, SSIM) over CG-SENSE
NETWORK = {"cartesian": "demo-xpdnet", "radial": "demo-ncpdnet-radial", "spiral": "demo-ncpdnet-spiral"}


@pytest.mark.parametrize("trajectory", ["cartesian", "radial", "spiral"])
def test_demo_artifact_beats_the_classical_baselines_on_held_out_data(tmp_path, artifacts, engine, trajectory):
    """Named, each network beats CG-SENSE; the automatic choice is never below the best classical method (it
    serves the network only inside its validated envelope, and then the network wins)."""
    path = tmp_path / f"{trajectory}.h5"
    simulate_to_file(path, trajectory=trajectory, coils=8, acceleration=4, matrix=96, noise=0.01, seed=12345)
    truth = read_ground_truth(path)[0].abs().numpy()
    sample = read_ismrmrd(path)[1][0]
    named, _ = _reconstruct(engine, sample, NETWORK[trajectory])
    learned = _scaled(named, truth)
    cg_sense = _scaled(classical_reconstruction(sample, method="cg-sense").image.numpy(), truth)
    plain = _scaled(classical_reconstruction(sample, method="rss").image.numpy(), truth)
    psnr_margin, ssim_margin = MARGINS[trajectory]
    assert psnr(truth, learned) > psnr(truth, cg_sense) + psnr_margin
    assert ssim(truth, learned) > ssim(truth, cg_sense) + ssim_margin
    assert psnr(truth, learned) > psnr(truth, plain) + 5.0
    kind = "cartesian" if trajectory == "cartesian" else "noncartesian"
    image, label = _reconstruct(engine, sample)
    chosen = choose(artifacts, sample)
    assert label == chosen.label if chosen is not None else label in CLASSICAL_METHODS[kind] or label == "rss"
    automatic = _scaled(image, truth)
    best = max(psnr(truth, _scaled(classical_reconstruction(sample, m).image.numpy(), truth))
               for m in CLASSICAL_METHODS[kind])
    assert psnr(truth, automatic) > best - 0.5


def test_recon_cli_labels_outputs_and_falls_back(tmp_path, artifacts):
    path = tmp_path / "radial.h5"
    simulate_to_file(path, trajectory="radial", coils=8, acceleration=4, matrix=96, seed=7)
    assert main(["recon", str(path), "-o", str(tmp_path / "learned")]) == 0
    [learned] = sorted((tmp_path / "learned").glob("*.png"))
    assert "ncpdnet" in learned.name and np.asarray(Image.open(learned)).shape == (96, 96)
    assert main(["recon", str(path), "-o", str(tmp_path / "classical"), "--artifact", "classical"]) == 0
    [classical] = sorted((tmp_path / "classical").glob("*.png"))
    assert classical.name.endswith("_l1-wavelet.png")
    # a single-coil acquisition fits no bundled artifact: classical fallback, said in the name
    single = tmp_path / "single.h5"
    simulate_to_file(single, trajectory="radial", coils=1, acceleration=1, matrix=64, seed=3)
    assert main(["recon", str(single), "-o", str(tmp_path / "fallback")]) == 0
    [fallback] = sorted((tmp_path / "fallback").glob("*.png"))
    assert fallback.name.endswith("_l1-wavelet.png")
    # a fully sampled scan without calibration flags reconstructs (coil combination unless a network is validated)
    from tests.scanner_like import fully_sampled_without_flags

    full = fully_sampled_without_flags(tmp_path / "full.h5")
    assert main(["recon", str(full), "-o", str(tmp_path / "full")]) == 0
    [image] = sorted((tmp_path / "full").glob("*.png"))
    assert np.asarray(Image.open(image)).shape == (96, 96)
    assert main(["recon", str(full), "-o", str(tmp_path / "full-xpdnet"), "--artifact", "demo-xpdnet"]) == 0


def test_unknown_or_unfit_artifact_is_a_clear_error(tmp_path, artifacts, capsys):
    path = tmp_path / "cart.h5"
    simulate_to_file(path, trajectory="cartesian", coils=8, acceleration=4, matrix=96, seed=5)
    assert main(["recon", str(path), "-o", str(tmp_path), "--artifact", "no-such-model"]) == 2
    assert "unknown artifact 'no-such-model'" in capsys.readouterr().err
    radial = next(a for a in artifacts if a.manifest.task == "noncartesian2d-multicoil")
    assert main(["recon", str(path), "-o", str(tmp_path), "--artifact", radial.name]) == 2
    assert "does not fit this data: task cartesian2d-multicoil" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None,
                    reason="Debian ismrmrd-tools not installed")
def test_reference_generator_file_gives_a_sensible_image(tmp_path, engine):
    path = tmp_path / "generated.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-m", "96", "-c", "8", "-a", "4", "-w", "16",
                    "-n", "0.01", "-o", str(path)], check=True, capture_output=True, cwd=tmp_path)
    import h5py

    with h5py.File(path) as f:
        stored = np.asarray(f["dataset/phantom"])[0]  # compound (real, imag) float32
        phantom = np.abs(stored["real"] + 1j * stored["imag"])
    sample = read_ismrmrd(path)[1][0]
    image, _ = _reconstruct(engine, sample, "demo-xpdnet")
    correlation = np.corrcoef(image.ravel(), phantom.ravel())[0, 1]
    zero_filled = classical_reconstruction(sample, method="rss").image.numpy()
    assert correlation > 0.9
    assert correlation > np.corrcoef(zero_filled.ravel(), phantom.ravel())[0, 1]


def test_bundled_artifacts_are_small():
    total = sum(p.stat().st_size for p in Path(BUNDLED_ARTIFACTS).rglob("*") if p.is_file())
    assert total < 20 * 2**20
