"""``mrdserve denoise INPUT -o OUTPUT --model MODEL [--sigma S]``: denoise every 2D slice of a magnitude image
offline with a trained denoiser (dispatched by service/cli.py; it needs the network code, like ``mrdserve train``).

MODEL is a denoiser checkpoint (``models.training.denoising.save_denoiser``, e.g. trained Learnlets) or a TorchScript
file of any module ``denoiser(image [B, 1, y, x], sigma [B]) -> [B, 1, y, x]``. Formats: see
``models.training.denoise_io``. Intensity convention: sigma is in the units of the input's values; the image (every
slice of it alike) is divided by its maximum absolute value before denoising, sigma with it, and the result is
multiplied back, so the network sees images in [0, 1] as in training (Learnlets, positively homogeneous, give the
same result at any scale). Without ``--sigma`` the noise level is estimated by Donoho's rule, the median absolute
finest diagonal wavelet coefficient over 0.6745 (``estimate_sigma``), and printed. Errors print one message and
return 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

MAD_TO_SIGMA = 0.6745  # median |N(0, 1)|
ESTIMATE_WAVELET = "db2"


def add_denoise_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mrdserve denoise``."""
    parser.add_argument("input", metavar="INPUT", help="magnitude image: .npy, .png (8/16-bit), .nii/.nii.gz or .dcm")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="where to write the denoised image (format from its suffix, as INPUT's)")
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="denoiser checkpoint (trained Learnlets) or TorchScript file of a denoiser(image, sigma)")
    parser.add_argument("--sigma", type=float, metavar="S",
                        help="noise standard deviation in the units of INPUT (default: estimated and printed)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="slices per forward pass (default 8)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    return parser


def estimate_sigma(slices: np.ndarray) -> float:
    """Donoho's noise estimate: median |finest diagonal coefficient| / 0.6745 of an orthonormal Daubechies-2
    transform (periodised), pooled over the slices ``[n, y, x]``."""
    import pywt

    bands = [pywt.dwt2(image, ESTIMATE_WAVELET, mode="periodization")[1][2].ravel() for image in slices]
    return float(np.median(np.abs(np.concatenate(bands)))) / MAD_TO_SIGMA


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive holds ``constants.pkl`` and ``code/``; a ``torch.save`` checkpoint does not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())


def load_model(path: str | Path, device: torch.device) -> tuple[Callable[..., torch.Tensor], str]:
    """The denoiser in ``path`` and a description of it (TorchScript file or denoiser checkpoint)."""
    from mrdserve.models.training.denoising import load_denoiser

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--model {str(path)!r} does not exist")
    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:  # TorchScript loading raises RuntimeError and others
            raise ValueError(f"--model {str(path)!r}: TorchScript file could not be loaded: {exc}") from exc
        return module.eval(), "TorchScript"
    model, checkpoint = load_denoiser(path, device)
    return model, f"{checkpoint['network']['name']} checkpoint"


def denoise_slices(model: Callable[..., torch.Tensor], slices: np.ndarray, sigma: float, device: torch.device,
                   batch_size: int = 8) -> np.ndarray:
    """Denoise ``slices [n, y, x]`` (input units, noise ``sigma``) under the intensity convention above."""
    peak = float(np.abs(slices).max())
    if peak == 0:
        return np.zeros_like(slices)
    scaled = torch.from_numpy(slices / peak).float()
    out = np.empty_like(slices)
    with torch.inference_mode():
        for start in range(0, scaled.shape[0], batch_size):
            batch = scaled[start : start + batch_size].unsqueeze(1).to(device)
            noise = torch.full((batch.shape[0],), sigma / peak, dtype=torch.float32, device=device)
            result = model(batch, noise)
            if not isinstance(result, torch.Tensor) or result.shape != batch.shape:
                found = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
                raise ValueError(f"--model returned {found} for an input of {tuple(batch.shape)}: not a denoiser "
                                 "(image [B, 1, y, x], sigma [B]) -> [B, 1, y, x]")
            out[start : start + batch.shape[0]] = result[:, 0].double().cpu().numpy() * peak
    return out


def run_denoise(args: argparse.Namespace) -> int:
    """Read INPUT, load MODEL, estimate sigma if needed, denoise every slice, write OUTPUT."""
    from mrdserve.models.training.denoise_io import image_format, read_image, write_image
    from mrdserve.models.training.loop import resolve_device

    try:
        if args.sigma is not None and not (math.isfinite(args.sigma) and args.sigma >= 0):
            raise ValueError(f"--sigma must be a finite noise level >= 0, got {args.sigma}")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        image_format(args.output)  # an unknown output format fails before any work
        device = resolve_device(args.device)
        image = read_image(args.input)
        model, description = load_model(args.model, device)
        if args.sigma is None:
            sigma = estimate_sigma(image.slices)
            print(f"estimated noise sigma: {sigma:.6g} (Donoho MAD of the finest diagonal {ESTIMATE_WAVELET} "
                  "wavelet band / 0.6745, input units)")
        else:
            sigma = float(args.sigma)
        denoised = denoise_slices(model, image.slices, sigma, device, args.batch_size)
        written = write_image(args.output, image, denoised)
    except ValueError as exc:  # ImageError is a ValueError
        print(f"mrdserve denoise: {exc}", file=sys.stderr)
        return 2
    n, height, width = image.slices.shape
    print(f"denoised {n} slice(s) of {height}x{width} with sigma {sigma:.6g} ({description}); wrote {written}")
    return 0
