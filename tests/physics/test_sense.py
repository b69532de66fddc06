import pytest
import torch

from mrdserve.models.physics.sense import SenseOp
from tests.physics.conftest import assert_adjoint, assert_normal, random_complex


@pytest.mark.parametrize("spatial", [(16, 12), (6, 8, 10)])
def test_sense_dot_product(spatial):
    smaps = random_complex(2, 4, *spatial, seed=0)
    mask = (torch.rand((*spatial[:-1], 1), generator=torch.Generator().manual_seed(1)) > 0.5).double()
    op = SenseOp(smaps, mask)
    assert_adjoint(op, (2, *spatial), (2, 4, *spatial), seed=2, rtol=1e-10)
    assert_normal(op, (2, *spatial), seed=2, atol=1e-10)


def test_single_coil_fully_sampled_is_unitary():
    mask = torch.ones(16, 1)
    op = SenseOp.single_coil((16, 16), mask, dtype=torch.complex128)
    assert_normal(op, (1, 16, 16), seed=4, normal=lambda x: op.adjoint(op.forward(x)), reference=lambda x: x,
                  atol=1e-12)


def test_sense_with_rss_normalised_maps_is_identity_when_fully_sampled():
    smaps = random_complex(1, 3, 8, 8, seed=5)
    smaps = smaps / smaps.abs().pow(2).sum(1, keepdim=True).sqrt()
    op = SenseOp(smaps, torch.ones(8, 1, dtype=torch.bool))
    assert_normal(op, (1, 8, 8), seed=6, reference=lambda x: x, atol=1e-12)


def test_sense_rejects_real_maps_and_bad_rank():
    with pytest.raises(TypeError, match="complex"):
        SenseOp(torch.ones(1, 2, 4, 4), torch.ones(4, 1))
    with pytest.raises(ValueError, match="smaps"):
        SenseOp(torch.ones(2, 4, 4, dtype=torch.complex64), torch.ones(4, 1))


def test_sense_names_the_expected_shape():
    op = SenseOp(random_complex(2, 4, 8, 8, seed=7), torch.ones(8, 1))
    with pytest.raises(ValueError, match=r"image must be \[2, 8, 8\], got \(2, 8, 6\)"):
        op.forward(random_complex(2, 8, 6, seed=8))
    with pytest.raises(ValueError, match=r"kspace must be \[2, 4, 8, 8\]"):
        op.adjoint(random_complex(2, 3, 8, 8, seed=9))
