"""The linear-operator protocol: adjoint objects, composition, the density weighting as an operator, shape checks,
and the NUFFT operator's plain and density-weighted forms."""

from __future__ import annotations

import pytest
import torch

from mrdserve.models.physics.linop import (
    ComposedOperator,
    Identity,
    LinearOperator,
    Weighting,
    format_shape,
    shape_matches,
    shapes_compatible,
)
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.nufft_cache import trajectory_hash
from mrdserve.models.physics.sense import SenseOp
from mrdserve.models.physics.trajectories import radial_2d
from tests.physics.conftest import assert_adjoint, assert_normal, random_complex, relative_error


def _sense(seed: int = 0) -> SenseOp:
    mask = (torch.rand(8, 1, generator=torch.Generator().manual_seed(seed)) > 0.5).double()
    return SenseOp(random_complex(2, 3, 8, 6, seed=seed + 1), mask)


def test_shapes_match_fixed_sizes_named_sizes_and_any_leading_dims():
    assert shape_matches((2, 3, 8), ("B", 3, 8)) and not shape_matches((2, 4, 8), ("B", 3, 8))
    assert shape_matches((5, 2, 7), ("...", 7)) and shape_matches((7,), ("...", 7))
    assert not shape_matches((2, 3), ("B", 3, 8)) and not shape_matches((6,), ("...", 7))
    assert shapes_compatible(("B", 3, 40), ("...", 40)) and not shapes_compatible(("B", 3, 40), ("...", 41))
    assert not shapes_compatible(("B", 8, 6), ("B", 8)) and format_shape(("B", 8, 6)) == "[B, 8, 6]"


def test_adjoint_operator_swaps_forward_and_adjoint():
    op = _sense()
    x, y = random_complex(2, 8, 6, seed=3), random_complex(2, 3, 8, 6, seed=4)
    assert torch.equal(op.H.forward(y), op.adjoint(y)) and torch.equal(op.H.adjoint(x), op.forward(x))
    assert op.H.H is op and op.H.domain_shape == op.range_shape
    assert torch.equal(op @ x, op.forward(x)) and torch.equal(op.H @ y, op.adjoint(y))
    assert_adjoint(op.H, (2, 3, 8, 6), (2, 8, 6), seed=5, rtol=1e-10)


def test_composition_applies_right_to_left_and_its_adjoint_in_reverse():
    op = _sense()
    weights = torch.rand(6, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    weighted = Weighting(weights) @ op
    assert isinstance(weighted, ComposedOperator)
    x = random_complex(2, 8, 6, seed=7)
    assert torch.equal(weighted.forward(x), op.forward(x) * weights)
    assert_adjoint(weighted, (2, 8, 6), (2, 3, 8, 6), seed=8, rtol=1e-10)
    assert_normal(op, (2, 8, 6), seed=9, normal=op.H @ op, reference=op.normal, atol=1e-10)  # binary mask


def test_default_normal_is_adjoint_of_forward():
    class Scale(LinearOperator):
        domain_shape = property(lambda self: ("...", 4))
        range_shape = property(lambda self: ("...", 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (2 + 1j) * x

        def adjoint(self, y: torch.Tensor) -> torch.Tensor:
            return (2 - 1j) * y

    assert_normal(Scale(), (3, 4), seed=10, reference=lambda x: 5 * x, atol=1e-12)


def test_complex_weights_adjoint_is_conjugate_and_real_weights_keep_single_precision():
    weights = random_complex(10, seed=11)
    assert_adjoint(Weighting(weights), (2, 10), (2, 10), seed=12, rtol=1e-12)
    data = random_complex(2, 10, seed=13, dtype=torch.complex64)
    assert Weighting(torch.rand(10, dtype=torch.float64)).forward(data).dtype == torch.complex64


def test_shape_errors_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"data must be \[\.\.\., 10\], got \(2, 9\)"):
        Weighting(torch.ones(10)).forward(torch.ones(2, 9, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"cannot compose .* takes \[\.\.\., 5\] but the inner one gives "
                                         r"\[2, 3, 8, 6\]"):
        Weighting(torch.ones(5)) @ _sense()
    with pytest.raises(ValueError, match="one-dimensional"):
        Weighting(torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"x must be \[B, 4\]"):
        Identity(("B", 4)).forward(torch.ones(4))


def test_nufft_normal_is_unweighted_and_the_weighted_forms_are_explicit():
    traj = radial_2d(16, 32)
    density = torch.rand(traj.shape[1], generator=torch.Generator().manual_seed(14))
    op = NufftOp(traj, (16, 16), smaps=random_complex(1, 2, 16, 16, seed=15), density=density, backend="finufft")
    y = random_complex(1, 2, traj.shape[1], seed=16)
    assert torch.equal(op.weighted_adjoint(y), (op.H @ op.weighting)(y))
    assert torch.equal(op.weighted_adjoint(y), op.adjoint(y * density.double()))
    assert_normal(op, (1, 16, 16), seed=17, rtol=1e-4)
    assert_normal(op, (1, 16, 16), seed=17, normal=op.weighted_normal, reference=op.H @ op.weighting @ op,
                  rtol=1e-4)
    x = random_complex(1, 16, 16, seed=17)
    assert relative_error(op.normal(x), op.weighted_normal(x)) > 0.1  # the density really differs
    plain = NufftOp(traj, (16, 16), backend="finufft")
    assert isinstance(plain.weighting, Identity) and torch.equal(plain.weighted_adjoint(y[:, :1]),
                                                                 plain.adjoint(y[:, :1]))


def test_nufft_shapes_and_trajectory_key():
    traj = radial_2d(8, 16)
    op = NufftOp(traj, (8, 8), smaps=random_complex(1, 3, 8, 8, seed=18))
    assert op.domain_shape == ("B", 8, 8) and op.range_shape == ("B", 3, 128)
    with pytest.raises(ValueError, match=r"data must be \[B, 3, 128\], got \(1, 2, 128\)"):
        op.adjoint(random_complex(1, 2, 128, seed=19))
    assert op.trajectory_key == trajectory_hash(traj)
    assert NufftOp(traj, (8, 8), trajectory_key="given").trajectory_key == "given"
