import pytest
import torch

from mrdserve.models.nets.score import ScoreNet
from mrdserve.models.training.dsm import (
    DSMConfig,
    PhantomBank,
    dsm_loss,
    load_score_checkpoint,
    save_score_checkpoint,
    train_score_network,
)

TINY = DSMConfig(matrices=(16, 24), crop=16, n_phantoms=4, validation_phantoms=2, batch_size=4, steps=4,
                 network={"n_filters": 4, "n_scales": 2}, checkpoint_every=2, log_every=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_residual_loss_is_the_ar_dae_objective():
    """sigma s(x + sigma eps, sigma) + eps: with the exact score of a point mass at x, -(x~ - x) / sigma^2, the
    residual vanishes; with a zero score it is eps, of mean square 1."""
    clean = torch.zeros(3, 2, 8, 8)

    class Exact(torch.nn.Module):
        def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return -noisy / sigma.reshape(-1, 1, 1, 1) ** 2

    class Zero(torch.nn.Module):
        def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(noisy)

    assert float(dsm_loss(Exact(), clean, 0.3, torch.Generator().manual_seed(0))) < 1e-10
    assert float(dsm_loss(Zero(), torch.zeros(64, 2, 16, 16), 0.3, torch.Generator().manual_seed(0))) == \
        pytest.approx(1.0, rel=0.02)


def test_bank_images_follow_the_intensity_convention():
    bank = PhantomBank(TINY)
    for stack in bank.stacks:
        assert torch.allclose(stack.abs().amax(dim=(1, 2)), torch.ones(stack.shape[0]))  # max |x| = 1
    batch = bank.batch(torch.Generator().manual_seed(0))
    assert batch.shape == (TINY.batch_size, 2, TINY.crop, TINY.crop)
    peak = batch.square().sum(1).sqrt().amax(dim=(1, 2))
    assert bool((peak <= 1 + TINY.intensity_jitter + 1e-6).all())  # crops and the intensity jitter
    assert 0.5 < bank.image_q99 <= 1.0


def test_dsm_loss_decreases_over_a_few_steps():
    """60 Adam steps on 16x16 crops take the held-out loss from 0.902 (the Gaussian skip term alone) to 0.820."""
    config = DSMConfig(matrices=(16,), crop=16, n_phantoms=4, batch_size=8, steps=60, lr=1e-2,
                       network={"n_filters": 8, "n_scales": 2})
    bank = PhantomBank(config)
    fixed = bank.batch(torch.Generator().manual_seed(1))

    def held_out_loss(network: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(dsm_loss(network, fixed, config.sigma_scale, torch.Generator().manual_seed(2)))

    torch.manual_seed(config.seed)
    before = held_out_loss(ScoreNet(**config.network))
    checkpoint = train_score_network(config)
    trained = ScoreNet(**config.network)
    trained.load_state_dict(checkpoint["model_state"])
    after = held_out_loss(trained)
    assert checkpoint["step"] == 60
    assert after < 0.95 * before, (before, after)
    assert set(checkpoint["validation"]["denoising"]) == {f"16/sigma={s:g}" for s in (0.02, 0.05, 0.1, 0.2)}


def test_checkpoint_resumes_to_the_same_weights(tmp_path):
    path = tmp_path / "score.pt"
    straight = train_score_network(TINY)
    first = train_score_network(DSMConfig(**{**TINY.__dict__, "steps": 2}), checkpoint_path=path)
    assert first["step"] == 2 and load_score_checkpoint(path)["step"] == 2
    resumed = train_score_network(TINY, checkpoint_path=path)
    assert resumed["step"] == 4 and len(resumed["losses"]) == 4
    for key, value in straight["model_state"].items():
        assert torch.allclose(resumed["model_state"][key], value, atol=1e-6), key
    with pytest.raises(ValueError, match="lr"):
        train_score_network(DSMConfig(**{**TINY.__dict__, "lr": 0.5}), checkpoint_path=path)


def test_checkpoint_format_and_config_are_checked(tmp_path):
    save_score_checkpoint({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="format"):
        load_score_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_score_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="matrices"):
        DSMConfig(matrices=(8,), crop=16)
    with pytest.raises(ValueError, match="intensity_jitter"):
        DSMConfig(intensity_jitter=1.5)
    with pytest.raises(ValueError, match="unknown DSM config"):
        DSMConfig.from_dict({"nope": 1})
    assert DSMConfig.from_dict(TINY.to_dict()) == TINY
    assert TINY.validation_seeds().stop == TINY.training_seeds(0).start  # held-out seeds precede the training ones
