from __future__ import annotations

import argparse
import shutil

import nibabel
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from mrdserve.models.nets.learnlets import Learnlets
from mrdserve.models.training.denoise_cli import add_denoise_arguments, estimate_sigma, run_denoise
from mrdserve.models.training.denoising import (
    DenoisingConfig,
    SigmaBlind,
    load_denoiser,
    save_denoiser,
    train_denoiser,
)
from mrdserve.service.cli import main

TINY = {"n_scales": 2, "n_filters": 4, "analysis_size": 3, "synthesis_size": 5}
CONFIG = DenoisingConfig(steps=12, batch_size=4, patch_size=16, image_size=32, train_seeds=(0, 3),
                         sigma_range=(0.05, 0.15), lr=1e-2, seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = Learnlets(**TINY)
    losses = train_denoiser(model, DenoisingConfig(steps=3, batch_size=2, patch_size=16, image_size=32,
                                                   train_seeds=(0, 2)))
    path = tmp_path_factory.mktemp("model") / "learnlets.pt"
    save_denoiser(path, model, {"name": "learnlets", "kwargs": TINY}, CONFIG, {"loss": losses[-1]})
    return path


def _denoise(*argv: str) -> int:
    parser = add_denoise_arguments(argparse.ArgumentParser())
    return run_denoise(parser.parse_args(list(argv)))


def _smooth_image(shape=(32, 32)) -> np.ndarray:
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    return 100.0 * np.exp(-2 * (x**2 + y**2))


@pytest.mark.parametrize("loss", ["l2", "l1"])
def test_a_few_steps_lower_the_loss(loss):
    torch.manual_seed(0)
    losses = train_denoiser(Learnlets(**TINY), DenoisingConfig(**{**CONFIG.__dict__, "loss": loss}))
    assert len(losses) == CONFIG.steps and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])


def test_trains_any_denoiser_of_image_and_sigma():
    torch.manual_seed(0)
    net = SigmaBlind(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.Conv2d(4, 1, 3, padding=1)))
    losses = train_denoiser(net, DenoisingConfig(**{**CONFIG.__dict__, "steps": 20}))
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    with pytest.raises(ValueError, match="sigma_range"):
        train_denoiser(net, DenoisingConfig(sigma_range=(0.2, 0.1)))
    with pytest.raises(ValueError, match="loss"):
        train_denoiser(net, DenoisingConfig(loss="ssim"))


def test_checkpoint_round_trip(checkpoint, tmp_path):
    model, saved = load_denoiser(checkpoint)
    assert isinstance(model, Learnlets) and saved["sigma_range"] == [0.05, 0.15]
    with pytest.raises(ValueError, match="format must be"):
        torch.save({"format": "other"}, tmp_path / "bad.pt")
        load_denoiser(tmp_path / "bad.pt")


def test_npy_round_trip_2d_and_3d_with_and_without_sigma(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    clean = _smooth_image()
    volume = np.stack([clean, 0.5 * clean]) + 5.0 * rng.standard_normal((2, 32, 32))
    np.save(tmp_path / "volume.npy", volume)
    assert _denoise(str(tmp_path / "volume.npy"), "-o", str(tmp_path / "same.npy"), "--model", str(checkpoint),
                    "--sigma", "0") == 0
    # exact reconstruction: sigma = 0 returns the input, whatever the weights
    assert np.allclose(np.load(tmp_path / "same.npy"), volume, atol=1e-4 * np.abs(volume).max())
    assert _denoise(str(tmp_path / "volume.npy"), "-o", str(tmp_path / "out.npy"), "--model", str(checkpoint)) == 0
    printed = capsys.readouterr().out
    estimate = float(printed.split("estimated noise sigma: ")[1].split()[0])
    assert estimate == pytest.approx(5.0, rel=0.2)
    out, truth = np.load(tmp_path / "out.npy"), np.stack([clean, 0.5 * clean])
    assert out.shape == (2, 32, 32) and out.dtype == np.float32
    assert np.square(out - truth).mean() < np.square(volume - truth).mean()
    np.save(tmp_path / "image.npy", volume[0])
    assert _denoise(str(tmp_path / "image.npy"), "-o", str(tmp_path / "image_out.npy"), "--model",
                    str(checkpoint), "--sigma", "5") == 0
    assert np.load(tmp_path / "image_out.npy").shape == (32, 32)


@pytest.mark.parametrize("bits", [8, 16])
def test_png_round_trip(checkpoint, tmp_path, bits):
    dtype = np.uint8 if bits == 8 else np.uint16
    scale = 2.0 if bits == 8 else 500.0
    pixels = np.clip(np.rint(scale * _smooth_image()), 0, 2**bits - 1).astype(dtype)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    assert _denoise(str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--model", str(checkpoint),
                    "--sigma", "0") == 0
    with Image.open(tmp_path / "out.png") as written:
        assert np.array_equal(np.asarray(written), pixels) and np.asarray(written).dtype == dtype
    assert _denoise(str(tmp_path / "in.png"), "-o", str(tmp_path / "out.npy"), "--model", str(checkpoint),
                    "--sigma", str(scale * 5)) == 0
    assert np.load(tmp_path / "out.npy").shape == pixels.shape


def test_torchscript_model_gives_the_checkpoints_result(checkpoint, tmp_path):
    model, _ = load_denoiser(checkpoint)
    torch.jit.script(model).save(str(tmp_path / "model.ts"))
    np.save(tmp_path / "in.npy", _smooth_image() + np.random.default_rng(1).standard_normal((32, 32)))
    for name, path in (("ckpt", checkpoint), ("ts", tmp_path / "model.ts")):
        assert _denoise(str(tmp_path / "in.npy"), "-o", str(tmp_path / f"{name}.npy"), "--model", str(path),
                        "--sigma", "3") == 0
    assert np.allclose(np.load(tmp_path / "ckpt.npy"), np.load(tmp_path / "ts.npy"), atol=1e-4)


def test_nifti_and_dicom_keep_their_headers(checkpoint, tmp_path):
    volume = np.stack([_smooth_image(), _smooth_image()], axis=-1).astype(np.float32)  # [x, y, slice]
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    nibabel.save(nibabel.Nifti1Image(volume, affine), tmp_path / "in.nii.gz")
    assert _denoise(str(tmp_path / "in.nii.gz"), "-o", str(tmp_path / "out.nii.gz"), "--model", str(checkpoint),
                    "--sigma", "0") == 0
    written = nibabel.load(tmp_path / "out.nii.gz")
    assert np.allclose(written.affine, affine) and np.allclose(written.get_fdata(), volume, atol=1e-3)
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "in.dcm")
    assert _denoise(str(tmp_path / "in.dcm"), "-o", str(tmp_path / "out.dcm"), "--model", str(checkpoint),
                    "--sigma", "0") == 0
    source, result = pydicom.dcmread(tmp_path / "in.dcm"), pydicom.dcmread(tmp_path / "out.dcm")
    assert np.abs(result.pixel_array.astype(int) - source.pixel_array.astype(int)).max() <= 1
    assert result.SOPInstanceUID != source.SOPInstanceUID and result.ImageType[0] == "DERIVED"


@pytest.mark.parametrize(("make", "argv", "message"), [
    (None, ["missing.npy"], "does not exist"),
    ("image.txt", ["image.txt"], "unknown format"),
    ("4d.npy", ["4d.npy"], "expected a 2D image or a 3D volume, got 4D"),
    ("image.npy", ["image.npy", "--sigma", "nan"], "--sigma must be a finite"),
    ("image.npy", ["image.npy", "--sigma", "inf"], "--sigma must be a finite"),
    ("image.npy", ["image.npy", "--sigma", "-1"], "--sigma must be a finite"),
    ("image.npy", ["image.npy", "--model-missing"], "--model"),
    ("volume.npy", ["volume.npy", "-o-png"], "a PNG holds one 2D image"),
    ("image.npy", ["image.npy", "-o-dcm"], "DICOM output needs a DICOM input"),
    ("rgb.png", ["rgb.png"], "grayscale PNG"),
])
def test_cli_errors_are_one_message_and_exit_2(checkpoint, tmp_path, capsys, make, argv, message):
    if make == "image.txt":
        (tmp_path / make).write_text("hello")
    elif make == "4d.npy":
        np.save(tmp_path / make, np.zeros((2, 2, 8, 8)))
    elif make == "volume.npy":
        np.save(tmp_path / make, np.ones((2, 8, 8)))
    elif make == "rgb.png":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / make)
    elif make is not None:
        np.save(tmp_path / make, np.ones((8, 8)))
    output, model = str(tmp_path / "out.npy"), str(checkpoint)
    if "-o-png" in argv:
        output = str(tmp_path / "out.png")
    if "-o-dcm" in argv:
        output = str(tmp_path / "out.dcm")
    if "--model-missing" in argv:
        model = str(tmp_path / "nope.pt")
    args = [str(tmp_path / argv[0]), *[a for a in argv[1:] if not a.startswith(("-o-", "--model-"))]]
    assert main(["denoise", *args, "-o", output, "--model", model]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mrdserve denoise:") and message in err and "Traceback" not in err


def test_sigma_estimate_is_donohos_rule_on_white_noise():
    noise = 0.3 * np.random.default_rng(2).standard_normal((3, 64, 64))
    assert estimate_sigma(noise) == pytest.approx(0.3, rel=0.05)
