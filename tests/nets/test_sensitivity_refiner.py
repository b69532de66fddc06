import pytest
import torch

from mrdserve.models.data.coils import coil_sensitivities_2d
from mrdserve.models.nets.complex import complex_to_real
from mrdserve.models.nets.sensitivity_refiner import ComplexUNet, SensitivityRefiner
from tests.nets.export_check import assert_exports
from tests.nets.grad_check import assert_gradients_reach_all_parameters


def _rss(smaps: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((smaps * smaps).sum(dim=(1, -1)))


def test_parameter_counts():
    # NC-PDNet 2D multicoil with the small refiner (163,718) minus without it (156,260)
    assert sum(p.numel() for p in SensitivityRefiner("small").parameters()) == 7_458
    assert sum(p.numel() for p in SensitivityRefiner("big").parameters()) == 120_790


@pytest.mark.parametrize("shape", [(16, 12), (11, 13)])
def test_shape_and_unit_rss(shape):
    torch.manual_seed(0)
    smaps = torch.randn(2, 4, *shape, 2)
    refined = SensitivityRefiner()(smaps)
    assert refined.shape == smaps.shape
    assert torch.allclose(_rss(refined), torch.ones(2, *shape), atol=1e-5)


def test_coils_are_refined_independently_by_one_shared_net():
    torch.manual_seed(0)
    refiner = SensitivityRefiner()
    smaps = torch.randn(1, 3, 8, 8, 2)
    per_coil = refiner.net(smaps[0])  # coils as a batch
    assert torch.allclose(refiner.net(smaps.flatten(0, 1)), per_coil)
    refined = refiner(smaps)
    assert torch.allclose(refined, per_coil[None] / _rss(per_coil[None])[:, None, ..., None], atol=1e-6)


def test_zero_network_keeps_normalised_maps():
    """With the last conv zeroed, S + U(S) = S: RSS-normalised maps come back unchanged."""
    refiner = SensitivityRefiner()
    last = refiner.net.unet.head[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    smaps = complex_to_real(coil_sensitivities_2d(4, (12, 12), seed=0))[None].float()
    assert torch.allclose(refiner(smaps), smaps, atol=1e-5)


def test_3d_and_complex_unet():
    torch.manual_seed(0)
    assert SensitivityRefiner("small", dim=3)(torch.randn(1, 2, 5, 6, 7, 2)).shape == (1, 2, 5, 6, 7, 2)
    assert ComplexUNet([4, 8])(torch.randn(3, 9, 10, 2)).shape == (3, 9, 10, 2)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    # weight the output so that the RSS normalisation does not make the loss constant
    refiner = SensitivityRefiner("big")
    weights = torch.randn(2, 3, 16, 16, 2)
    assert_gradients_reach_all_parameters(lambda_module(refiner, weights), (torch.randn(2, 3, 16, 16, 2),))


def lambda_module(refiner: torch.nn.Module, weights: torch.Tensor) -> torch.nn.Module:
    class Weighted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.refiner = refiner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.refiner(x) * weights

    return Weighted()


def test_bad_preset_raises():
    with pytest.raises(ValueError, match="preset"):
        SensitivityRefiner("medium")


def test_scripts_and_exports_to_onnx():
    torch.manual_seed(0)
    how = assert_exports(SensitivityRefiner(), (torch.randn(2, 3, 11, 12, 2),), (torch.randn(3, 3, 11, 12, 2),))
    assert how == "script"
