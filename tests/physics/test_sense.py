import pytest
import torch

from mrdserve.models.physics.sense import SenseOp


def _rand(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.complex128)


@pytest.mark.parametrize("spatial", [(16, 12), (6, 8, 10)])
def test_sense_dot_product(spatial):
    smaps = _rand((2, 4, *spatial), 0)
    mask = (torch.rand((*spatial[:-1], 1), generator=torch.Generator().manual_seed(1)) > 0.5).double()
    op = SenseOp(smaps, mask)
    x, y = _rand((2, *spatial), 2), _rand((2, 4, *spatial), 3)
    lhs = torch.vdot(op.forward(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.adjoint(y).flatten())
    assert abs(lhs - rhs) / abs(lhs) < 1e-10
    assert torch.allclose(op.normal(x), op.adjoint(op.forward(x)), atol=1e-10)


def test_single_coil_fully_sampled_is_unitary():
    mask = torch.ones(16, 1)
    op = SenseOp.single_coil((16, 16), mask, dtype=torch.complex128)
    x = _rand((1, 16, 16), 4)
    assert torch.allclose(op.adjoint(op.forward(x)), x, atol=1e-12)


def test_sense_with_rss_normalised_maps_is_identity_when_fully_sampled():
    smaps = _rand((1, 3, 8, 8), 5)
    smaps = smaps / smaps.abs().pow(2).sum(1, keepdim=True).sqrt()
    op = SenseOp(smaps, torch.ones(8, 1, dtype=torch.bool))
    x = _rand((1, 8, 8), 6)
    assert torch.allclose(op.normal(x), x, atol=1e-12)


def test_sense_rejects_real_maps_and_bad_rank():
    with pytest.raises(TypeError, match="complex"):
        SenseOp(torch.ones(1, 2, 4, 4), torch.ones(4, 1))
    with pytest.raises(ValueError, match="smaps"):
        SenseOp(torch.ones(2, 4, 4, dtype=torch.complex64), torch.ones(4, 1))
