"""Image quality on held-out data: each classical method and each bundled artifact, side by side.

Cases (none of them a training sample), from three independent sources: ``mrdserve simulate`` files at 128 and
256 (held-out seeds, through the ISMRMRD path: noise scan, prewhitening, 2x readout oversampling; also 2-coil data
at R=2, fully sampled files with 8 and 2 coils, radial and spiral files), ISMRMRD's own
``ismrmrd_generate_cartesian_shepp_logan`` (256, 8 coils, R=4 + 24 ACS, its default 5% noise) and BART's analytic
multicoil k-space phantoms (Shepp-Logan, geometric objects, tubes; 256, 8 coils, R=4 + 24 ACS, noiseless).
Each method's magnitude is scale-fitted to the reference (least squares), then PSNR / SSIM / NMSE with fastMRI
conventions; seconds per slice alongside. "default" is what ``mrdserve recon`` serves without ``--artifact``
(artifact inside its validated envelope, else the best classical method). PNG panels (reference, methods, error
maps x5) go to ``bench/out/quality/``.

Run: ``.venv/bin/python bench/quality.py [--cases NAME ...]``. Last line: ``xpdnet_vs_best_classical_db=<min over
Cartesian R>=4 cases> ncpdnet_vs_best_classical_db=<min over non-Cartesian cases> default_vs_best_classical_db=<min
over undersampled cases> default_vs_zero_filled_db=<min> fully_sampled_ok=<0|1>`` (fully sampled scans are served
as the exact coil combination of what was acquired; ok when that never falls below it by more than 0.5 dB).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrdserve.models.data.baseline import CLASSICAL_METHODS, classical_reconstruction, is_fully_sampled  # noqa: E402
from mrdserve.models.data.ismrmrd_io import read_ismrmrd  # noqa: E402
from mrdserve.models.data.metrics import fitted_scores, scale_fit  # noqa: E402
from mrdserve.models.data.sample import KSpaceSample  # noqa: E402
from mrdserve.models.data.simulate import read_ground_truth, simulate_to_file  # noqa: E402
from mrdserve.models.physics.classical import rss  # noqa: E402
from mrdserve.models.physics.fft import ifftnc  # noqa: E402
from mrdserve.service.artifacts import load_artifacts, mismatch  # noqa: E402
from mrdserve.service.engine.choice import AUTOMATIC, Choice  # noqa: E402
from mrdserve.service.offline_recon import offline_engine  # noqa: E402

CLASSICAL_CARTESIAN = CLASSICAL_METHODS["cartesian"]
CLASSICAL_NONCARTESIAN = CLASSICAL_METHODS["noncartesian"]
OUT = ROOT / "bench" / "out" / "quality"


@dataclass
class Case:
    name: str
    samples: list
    references: list[np.ndarray]
    cartesian: bool
    acceleration: float


def _simulated(name: str, workdir: Path, **kwargs) -> Case:
    path = workdir / f"{name}.h5"
    simulate_to_file(path, **kwargs)
    _, samples = read_ismrmrd(path)
    truth = read_ground_truth(path).abs().numpy()
    return Case(name, samples, list(truth), kwargs.get("trajectory", "cartesian") == "cartesian",
                float(kwargs.get("acceleration", 1)))


def _shepp_logan(workdir: Path, matrix: int = 256, coils: int = 8, acceleration: int = 4) -> Case | None:
    tool = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    if tool is None:
        print("# ismrmrd_generate_cartesian_shepp_logan not found: Shepp-Logan case skipped")
        return None
    path = workdir / "shepp_logan.h5"
    subprocess.run([tool, "-o", str(path), "-m", str(matrix), "-c", str(coils), "-a", str(acceleration),
                    "-w", "24"], check=True, capture_output=True)
    _, samples = read_ismrmrd(path)
    with h5py.File(path, "r") as f:  # fully sampled coil images on the 2x oversampled readout grid
        stored = f["dataset/coil_images"][...]
    coil_images = stored["real"] + 1j * stored["imag"] if stored.dtype.names else np.asarray(stored)
    coil_images = coil_images.reshape(-1, *coil_images.shape[-2:])
    rss = np.sqrt((np.abs(coil_images) ** 2).sum(0))
    crop = (rss.shape[-1] - matrix) // 2
    reference = rss[:, crop:crop + matrix] if rss.shape[-1] > matrix else rss
    # -a R writes R repetitions, each one offset of the lattice: keep the first
    return Case("shepp-logan-256", samples[:1], [reference.astype(np.float64)], True, float(acceleration))


def _read_cfl(base: Path) -> np.ndarray:
    dims = [int(d) for d in base.with_suffix(".hdr").read_text().split("\n")[1].split()]
    return np.fromfile(base.with_suffix(".cfl"), dtype=np.complex64).reshape(dims[::-1])


def _bart_phantom(workdir: Path, name: str, flags: list[str], matrix: int = 256, coils: int = 8,
                  acceleration: int = 4, acs_lines: int = 24) -> Case | None:
    """BART's analytic multicoil k-space (another generator, piecewise-constant objects), R=4 + 24 ACS lines,
    no noise; the reference is the RSS of the fully sampled k-space."""
    if shutil.which("bart") is None:
        print(f"# bart not found: {name} skipped")
        return None
    base = workdir / name
    subprocess.run(["bart", "phantom", "-x", str(matrix), "-s", str(coils), "-k", *flags, str(base)], check=True,
                   capture_output=True)
    kspace = torch.from_numpy(_read_cfl(base).reshape(coils, matrix, matrix).copy())
    reference = rss(ifftnc(kspace[None], 2), dim=1)[0].numpy().astype(np.float64)
    lines = torch.zeros(matrix, dtype=torch.bool)
    lines[::acceleration] = True
    acs = torch.zeros(matrix, dtype=torch.bool)
    acs[matrix // 2 - acs_lines // 2: matrix // 2 + acs_lines // 2] = True
    lines |= acs
    sample = KSpaceSample(kspace=kspace * lines[:, None], matrix=(matrix, matrix), recon_matrix=(matrix, matrix),
                          mask=lines[:, None], acs_mask=acs[:, None], acceleration=(acceleration,))
    return Case(name, [sample], [reference], True, float(acceleration))


def build_cases(workdir: Path, names: list[str] | None) -> list[Case]:
    builders = {
        "sim-128-r4": lambda: _simulated("sim-128-r4", workdir, matrix=128, coils=8, acceleration=4, seed=9101),
        "sim-256-r4": lambda: _simulated("sim-256-r4", workdir, matrix=256, coils=8, acceleration=4, seed=9102),
        "sim-256-r4-random": lambda: _simulated("sim-256-r4-random", workdir, matrix=256, coils=12,
                                                acceleration=4, seed=9103, mask_type="random"),
        "shepp-logan-256": lambda: _shepp_logan(workdir),
        "bart-shepp-logan-256": lambda: _bart_phantom(workdir, "bart-shepp-logan-256", []),
        "bart-geometric-256": lambda: _bart_phantom(workdir, "bart-geometric-256", ["-G"]),
        "bart-tubes-256": lambda: _bart_phantom(workdir, "bart-tubes-256", ["-T"]),
        "two-coil-160-r2": lambda: _simulated("two-coil-160-r2", workdir, matrix=160, coils=2, acceleration=2,
                                              seed=9104, noise=0.03, center_fraction=0.15),
        "full-8-coil": lambda: _simulated("full-8-coil", workdir, matrix=128, coils=8, acceleration=1, seed=9105),
        "full-2-coil": lambda: _simulated("full-2-coil", workdir, matrix=160, coils=2, acceleration=1, seed=9106,
                                          noise=0.03),
        "radial-96-r4": lambda: _simulated("radial-96-r4", workdir, trajectory="radial", matrix=96, coils=8,
                                           acceleration=4, seed=9107),
        "radial-128-r4": lambda: _simulated("radial-128-r4", workdir, trajectory="radial", matrix=128, coils=8,
                                            acceleration=4, seed=9108),
        "spiral-96-r4": lambda: _simulated("spiral-96-r4", workdir, trajectory="spiral", matrix=96, coils=8,
                                           acceleration=4, seed=9109),
    }
    chosen = names or list(builders)
    unknown = sorted(set(chosen) - set(builders))
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {', '.join(builders)}")
    return [case for case in (builders[n]() for n in chosen) if case is not None]


def _panel(case: Case, images: dict[str, np.ndarray]) -> None:
    reference = case.references[0]
    peak = float(reference.max()) or 1.0
    tiles = [reference / peak]
    errors = [np.zeros_like(reference)]
    for image in images.values():
        fitted = scale_fit(reference, image)
        tiles.append(fitted / peak)
        errors.append(5.0 * np.abs(fitted - reference) / peak)
    row = np.concatenate([np.concatenate(tiles, axis=1), np.concatenate(errors, axis=1)], axis=0)
    OUT.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(row, 0, 1) * 255).astype(np.uint8)).save(OUT / f"{case.name}.png")
    (OUT / f"{case.name}.txt").write_text("columns: reference, " + ", ".join(images) + "\n")


def evaluate(case: Case, artifacts: list) -> dict[str, tuple[float, float, float, float]]:
    """Per method: (PSNR, SSIM, NMSE, seconds per slice) averaged over the case's slices."""
    methods: dict[str, object] = {}
    for method in CLASSICAL_CARTESIAN if case.cartesian else CLASSICAL_NONCARTESIAN:
        methods[method] = method
    engine = offline_engine([a.path for a in artifacts], runner="torchscript", device="cpu")
    for artifact in artifacts:
        if all(mismatch(artifact, s) is None for s in case.samples):
            methods[artifact.name] = Choice.of(artifact.name)
    methods["default"] = AUTOMATIC
    rows: dict[str, tuple[float, float, float, float]] = {}
    first_images: dict[str, np.ndarray] = {}
    for name, how in methods.items():
        scores, seconds = [], 0.0
        for index, (sample, reference) in enumerate(zip(case.samples, case.references, strict=True)):
            start = time.perf_counter()
            try:
                if isinstance(how, str):
                    image, label = classical_reconstruction(sample, how).image.detach().cpu().numpy(), how
                else:
                    [result] = engine.reconstruct_sync([sample], how)
                    image, label = result.image, result.method or result.label
            except ValueError as error:  # a method that cannot reconstruct this data is a row of NaN, not a crash
                print(f"# {case.name}: {name} failed: {error}")
                scores.append((float("nan"),) * 3)
                continue
            seconds += time.perf_counter() - start
            image = image.astype(np.float64)
            scores.append(fitted_scores(reference, image))
            if index == 0:
                first_images[name if name != "default" else f"default ({label})"] = image
        mean = np.mean(np.asarray(scores), axis=0)
        rows[name] = (float(mean[0]), float(mean[1]), float(mean[2]), seconds / len(case.samples))
    _panel(case, first_images)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    artifacts = load_artifacts()
    xpdnet_margin: list[float] = []
    ncpdnet_margin: list[float] = []
    default_margin: list[float] = []
    default_vs_zero: list[float] = []
    fully_sampled_ok = 1
    with tempfile.TemporaryDirectory() as tmp:
        for case in build_cases(Path(tmp), args.cases):
            rows = evaluate(case, artifacts)
            print(f"\n## {case.name} ({len(case.samples)} slice(s), R={case.acceleration:g})")
            print(f"{'method':<28}{'PSNR dB':>9}{'SSIM':>8}{'NMSE':>10}{'s/slice':>9}")
            for name, (p, s, e, t) in rows.items():
                print(f"{name:<28}{p:>9.2f}{s:>8.3f}{e:>10.5f}{t:>9.2f}")
            classical = CLASSICAL_CARTESIAN if case.cartesian else CLASSICAL_NONCARTESIAN
            best = max(classical, key=lambda m: rows[m][0])
            zero = rows[classical[0]][0]
            print(f"best classical: {best} ({rows[best][0]:.2f} dB)")
            if not all(is_fully_sampled(s) for s in case.samples):  # fully sampled: exact coil combination
                default_margin.append(rows["default"][0] - rows[best][0])
            default_vs_zero.append(rows["default"][0] - zero)
            learned = [n for n in rows if n not in classical and n != "default"]
            for name in learned:
                margin = rows[name][0] - rows[best][0]
                if case.cartesian and case.acceleration >= 4:
                    xpdnet_margin.append(margin)
                elif not case.cartesian:
                    ncpdnet_margin.append(margin)
            if all(is_fully_sampled(s) for s in case.samples) and rows["default"][0] < zero - 0.5:
                fully_sampled_ok = 0  # a fully sampled scan must reconstruct at least as well as coil combination
    def worst(values: list[float]) -> str:
        return f"{min(values):.2f}" if values else "nan"

    print(f"xpdnet_vs_best_classical_db={worst(xpdnet_margin)} ncpdnet_vs_best_classical_db={worst(ncpdnet_margin)} "
          f"default_vs_best_classical_db={worst(default_margin)} default_vs_zero_filled_db={worst(default_vs_zero)} "
          f"fully_sampled_ok={fully_sampled_ok}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
