"""Annealed-HMC posterior sampling: exactness on a Gaussian prior, the bundled demo prior on held-out data
(Cartesian R=4 and radial), the time budget, argument errors and the prior artifact's integrity checks."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mrdserve.models.data.metrics import psnr, scale_fit
from mrdserve.models.data.prepare import prepare_sample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.score_prior_artifact import load_score_prior, read_score_manifest
from mrdserve.models.data.simulate import simulate_noncartesian
from mrdserve.models.export.score_prior import held_out_case, posterior_figures, zero_filled_magnitude
from mrdserve.models.physics.fft import fftnc, ifftnc
from mrdserve.models.physics.posterior_sampling import (
    MAX_POSTERIOR_SAMPLES,
    SamplerSettings,
    SamplingCancelledError,
    sample_posterior,
)

PRIOR = Path(__file__).resolve().parents[2] / "service" / "priors" / "demo-score-0.1"
TEST_SEED = 777  # a simulation seed (and so a phantom) that neither training nor the manifest's validation used
# cheaper than the validated settings (tests stay fast): fewer levels, one uncalibrated move per level
FAST = {"n_levels": 15, "steps_per_level": 1, "metropolis": False}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def prior():
    score, manifest = load_score_prior(PRIOR)
    return score, manifest, SamplerSettings.from_dict(manifest["sampler_settings"] | FAST)


def _gaussian_problem(n: int = 16, tau: float = 0.3, noise: float = 0.05):
    """Single-coil Cartesian data of x ~ N(0, tau^2) per real component, half the ky lines, noise std ``noise``."""
    generator = torch.Generator().manual_seed(0)
    image = tau * torch.complex(torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator))
    lines = (torch.rand(n, generator=generator) < 0.5).float()
    lines[n // 2] = 1
    mask = lines[:, None].expand(n, n).contiguous()
    white = torch.complex(torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator))
    kspace = mask * (fftnc(image, 2) + noise * white)
    inputs = {"kspace": torch.view_as_real(kspace)[None, None].contiguous(), "mask": mask[None, None]}
    return inputs, kspace, mask


def test_gaussian_prior_gives_the_analytic_posterior():
    """Prior N(0, tau^2) (its smoothed score is exact: -x / (tau^2 + sigma^2)), A = M F: the posterior is Gaussian
    with mean F^H M tau^2 / (tau^2 + s^2) y and per-pixel variance f tau^2 s^2 / (tau^2 + s^2) + (1 - f) tau^2."""
    tau, noise, n_samples = 0.3, 0.05, 64
    inputs, kspace, mask = _gaussian_problem(tau=tau, noise=noise)

    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return -x / (tau**2 + sigma.reshape(-1, 1, 1, 1) ** 2)

    settings = SamplerSettings(sigma_max=0.5, sigma_min=0.005, noise_floor=1e-4)
    result = sample_posterior(score, inputs, "cartesian-sense", n_samples, noise_std=noise, settings=settings,
                              prior_scale=1.0, seed=1)
    mean = ifftnc(mask * (tau**2 / (tau**2 + noise**2)) * kspace, 2)
    fraction = float(mask.mean())
    variance = fraction * tau**2 * noise**2 / (tau**2 + noise**2) + (1 - fraction) * tau**2  # per real component
    mean_error = float((result.mean - mean).abs().square().mean() / 2)  # measured: 1.10 variance / N
    spread = float((result.samples - result.mean).abs().square().mean() / 2) * n_samples / (n_samples - 1)
    assert mean_error < 1.5 * variance / n_samples
    assert spread == pytest.approx(variance, rel=0.15)  # measured: +7.9%
    assert 0.6 < result.acceptance_rate <= 1.0 and result.n_completed == n_samples and not result.stopped_early


def test_demo_prior_beats_zero_filling_on_held_out_cartesian_data(prior):
    score, manifest, settings = prior
    case = held_out_case(64, 4, 4, TEST_SEED)
    for first, last in manifest["training"]["data"]["training_seeds"]:
        assert not first <= case.phantom_seed < last  # a phantom the prior never saw
    result = sample_posterior(score, case.prepared.inputs, "cartesian-sense", 4, settings=settings, seed=0)
    figures = posterior_figures(result, case, zero_filled_magnitude(case))
    # measured (64x64, 4 coils, seed 777, 4 samples, FAST settings, noise estimated from the data): mean
    # 19.10 dB vs zero-filled 16.51 dB (CG-SENSE 17.52, l1-wavelet 17.14 on this slice); Spearman rho 0.593
    assert figures["mean_psnr_db"] > figures["zf_psnr_db"] + 1.5, figures
    assert figures["spearman_rho"] > 0.45, figures
    assert result.samples.shape == (4, 64, 64) and result.samples.is_complex()
    assert result.std.shape == (64, 64) and not result.std.is_complex() and float(result.std.min()) >= 0


def test_demo_prior_runs_on_radial_data_and_beats_the_density_compensated_adjoint(prior):
    score, _, settings = prior
    sim = simulate_noncartesian("radial", 64, n_coils=4, acceleration=4, n_slices=1, with_noise_scan=False,
                                seed=TEST_SEED)
    sample = KSpaceSample(kspace=sim.kspace[0].contiguous(), matrix=sim.matrix, recon_matrix=sim.matrix,
                          trajectory_type="radial", trajectory=sim.trajectory, acceleration=(4,))
    prepared = prepare_sample(sample, "noncartesian-toeplitz")
    result = sample_posterior(score, prepared.inputs, "noncartesian-toeplitz", 2, settings=settings, seed=0)
    adjoint = torch.view_as_complex(prepared.inputs["adjoint"][0].contiguous())
    smaps = torch.view_as_complex(prepared.inputs["smaps"][0].contiguous())
    combined = (smaps.conj() * adjoint).sum(0).abs().numpy()
    reference = sim.ground_truth[0].abs().numpy()
    mean_db = psnr(reference, scale_fit(reference, result.mean.abs().numpy()))
    adjoint_db = psnr(reference, scale_fit(reference, combined))
    # measured (64x64 radial, 4 coils, R=4, seed 777, 2 samples, FAST settings): mean 29.98 dB vs the
    # density-compensated adjoint 21.00 dB
    assert mean_db > adjoint_db + 5.0, (mean_db, adjoint_db)
    assert result.noise_std > 0 and result.samples.shape == (2, 64, 64)


def test_time_budget_stops_early_and_still_denoises_what_exists(prior):
    score, _, settings = prior
    case = held_out_case(32, 2, 4, TEST_SEED)
    fractions = []
    result = sample_posterior(score, case.prepared.inputs, "cartesian-sense", 2, settings=settings, seed=0,
                              time_budget_s=1e-6, progress=fractions.append)
    assert result.stopped_early and result.n_completed == 0 and result.levels_completed == 0
    assert result.samples.shape == (2, 32, 32) and bool(torch.isfinite(result.samples).all())
    assert result.sigma_final == pytest.approx(settings.sigma_max) and "time budget" in result.note
    assert fractions == []
    full = sample_posterior(score, case.prepared.inputs, "cartesian-sense", 3,
                            settings=SamplerSettings.from_dict(settings.to_dict() | {"n_levels": 4, "max_batch": 2}),
                            progress=fractions.append)
    assert not full.stopped_early and full.n_completed == 3 and full.samples.shape == (3, 32, 32)
    assert fractions == pytest.approx([i / 8 for i in range(1, 9)])  # 4 levels x 2 chunks


def test_cancelled_stops_at_the_next_move_and_returns_nothing(prior):
    score, _, settings = prior
    case = held_out_case(32, 2, 4, TEST_SEED)
    asked = []

    def cancelled() -> bool:
        asked.append(True)
        return len(asked) >= 3

    with pytest.raises(SamplingCancelledError, match="cancelled"):
        sample_posterior(score, case.prepared.inputs, "cartesian-sense", 2, settings=settings, cancelled=cancelled)
    assert len(asked) == 3  # asked after every move, stopped at the first True


def _inputs() -> dict[str, torch.Tensor]:
    return _gaussian_problem(n=8)[0]


def _identity_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return -x


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_samples": 0}, "n_samples"), ({"n_samples": MAX_POSTERIOR_SAMPLES + 1}, "n_samples"),
    ({"n_samples": True}, "n_samples"), ({"preparation": "grappa"}, "preparation"),
    ({"noise_std": -1.0}, "noise_std"), ({"time_budget_s": 0.0}, "time_budget_s"),
    ({"prior_scale": float("nan")}, "prior_scale"), ({"settings": {"n_levels": 3}}, "settings"),
    ({"score": None}, "score"),
])
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"score": _identity_score, "inputs": _inputs(), "preparation": "cartesian-sense", "n_samples": 2}
    with pytest.raises(ValueError, match=message):
        sample_posterior(**(arguments | kwargs))


@pytest.mark.parametrize(("change", "message"), [
    (lambda i: i.pop("mask"), r"inputs\['mask'\] is missing"),
    (lambda i: i.update(kspace=torch.cat([i["kspace"]] * 2)), "batch 1"),
    (lambda i: i.update(kspace=i["kspace"].repeat(1, 2, 1, 1, 1)), "smaps"),
    (lambda i: i.update(mask=i["mask"].to(torch.complex64)), "real floating-point"),
])
def test_bad_inputs_are_named(change, message):
    inputs = _inputs()
    change(inputs)
    with pytest.raises(ValueError, match=message):
        sample_posterior(_identity_score, inputs, "cartesian-sense", 1)
    with pytest.raises(ValueError, match="inputs"):
        sample_posterior(_identity_score, _inputs(), "noncartesian-toeplitz", 1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sigma_min": 2.0}, "sigma_min"), ({"n_levels": 0}, "n_levels"), ({"simpson_intervals": 3}, "even"),
    ({"step_size": -0.1}, "step_size"), ({"max_batch": 0}, "max_batch"), ({"step_exponent": float("inf")},
                                                                           "step_exponent"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplerSettings(**kwargs)
    with pytest.raises(ValueError, match="unknown sampler setting"):
        SamplerSettings.from_dict({"gamma": 0.995})


def test_bundled_prior_manifest_and_onnx_agree_with_its_torchscript(prior):
    import onnxruntime

    score, manifest, _ = prior
    assert manifest["kind"] == "score-prior" and manifest["intended_use"].startswith("research")
    assert sum((PRIOR / name).stat().st_size for name in manifest["files"]) < 5e6
    for key in ("mean_psnr_db", "zf_psnr_db", "spearman_rho"):
        assert key in manifest["validation"]["posterior"]
    session = onnxruntime.InferenceSession(str(PRIOR / "model.onnx"), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(3)
    x, sigma = torch.randn(3, 2, 48, 40, generator=generator), torch.tensor([0.3, 0.05, 0.01])
    with torch.no_grad():
        expected = score(x, sigma).numpy()
    (got,) = session.run(None, {"x": x.numpy(), "sigma": sigma.numpy()})
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4


def test_a_modified_prior_is_refused(tmp_path):
    copy = tmp_path / "prior"
    shutil.copytree(PRIOR, copy)
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ValueError, match="sha256"):
        load_score_prior(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest | {"kind": "reconstruction"}))
    with pytest.raises(ValueError, match="kind"):
        read_score_manifest(copy)
