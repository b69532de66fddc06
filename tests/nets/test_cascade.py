from __future__ import annotations

import pytest
import torch

from mrdserve.models.nets.cascade import CascadeNet
from mrdserve.models.nets.data_consistency import WeightedConsistency, data_consistency
from mrdserve.models.nets.registry import build_network
from tests.nets.cartesian_inputs import random_inputs

TINY = {"n_cascades": 2, "n_layers": 2, "n_filters": 8}


@pytest.mark.parametrize(("kwargs", "expected"), [
    # per cascade: conv 2->48 (912) + 4 x conv 48->48 (20,784) + conv 48->2 (866) = 84,914; x 5 cascades
    ({}, 424_570),
    ({"dc_lambda": 10.0}, 424_570),  # fixed lambda: a buffer, no parameter
    ({"dc_lambda": 10.0, "learn_lambda": True}, 424_575),  # one learned lambda per cascade
])
def test_parameter_count_of_the_thesis_configuration(kwargs, expected):
    with torch.device("meta"):
        model = CascadeNet(**kwargs)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_weighted_consistency_is_the_noise_aware_average_at_sampled_points():
    g = torch.Generator().manual_seed(0)
    predicted = torch.complex(torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g))
    measured = torch.complex(torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g))
    mask = (torch.rand(2, 1, 8, 8, generator=g) < 0.5).float()
    noise_lambda = 3.0
    out = WeightedConsistency(noise_lambda, learn=False)(predicted, mask * measured, mask)
    expected = torch.where(mask.bool(), (predicted + noise_lambda * measured) / (1 + noise_lambda), predicted)
    assert torch.allclose(out, expected, atol=1e-6)
    replaced = data_consistency(None, False)(predicted, mask * measured, mask)
    assert torch.equal(replaced, torch.where(mask.bool(), measured, predicted))


def test_registered_and_rejects_bad_arguments():
    assert isinstance(build_network("cascadenet", **TINY), CascadeNet)
    with pytest.raises(ValueError, match="n_cascades"):
        CascadeNet(n_cascades=0)
    with pytest.raises(ValueError, match="learn_lambda needs a finite"):
        CascadeNet(learn_lambda=True)
    with pytest.raises(ValueError, match="dc_lambda must be a positive"):
        CascadeNet(dc_lambda=-1.0)
    kspace, mask, _ = random_inputs(1, 3, (8, 8))
    with pytest.raises(ValueError, match="no smaps"):
        CascadeNet(**TINY)(kspace, mask)
