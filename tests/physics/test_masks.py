from __future__ import annotations

import numpy as np
import pytest
import torch

from mrdserve.models.physics.masks import (
    CartesianMask,
    EquispacedFractionMask,
    EquispacedMask,
    RandomMask,
    as_kspace_mask,
)

N = 320


def _acs_ok(drawn: CartesianMask, n: int, cf: float) -> None:
    num_low = round(n * cf)
    assert drawn.num_acs == num_low
    indices = np.flatnonzero(drawn.acs)
    assert indices[-1] - indices[0] + 1 == num_low  # contiguous
    assert drawn.acs[n // 2]  # covers the zero frequency
    assert abs((indices[0] + indices[-1]) / 2 - n / 2) <= 1.0  # centred
    assert np.all(drawn.mask[drawn.acs])


@pytest.mark.parametrize("accel, cf", [(4, 0.08), (8, 0.04)])
def test_random_mask_mean_acceleration_matches_request(accel: int, cf: float) -> None:
    func = RandomMask([cf], [accel])
    draws = [func(N, seed=s) for s in range(200)]
    for drawn in draws:
        _acs_ok(drawn, N, cf)
    mean_lines = np.mean([d.mask.sum() for d in draws])
    # Expected lines = N / R exactly; 200 draws: standard error < 1 %.
    assert abs(N / mean_lines - accel) / accel < 0.03


@pytest.mark.parametrize("accel, cf, n", [(4, 0.08, 320), (8, 0.04, 368), (3, 0.1, 97)])
def test_equispaced_mask_is_periodic_outside_acs(accel: int, cf: float, n: int) -> None:
    func = EquispacedMask([cf], [accel])
    for seed in range(10):
        drawn = func(n, seed=seed)
        _acs_ok(drawn, n, cf)
        outside = np.flatnonzero(drawn.mask & ~drawn.acs)
        offset = outside[0] % accel
        assert offset < accel
        expected = np.zeros(n, dtype=bool)
        expected[offset::accel] = True
        assert np.array_equal(drawn.mask & ~drawn.acs, expected & ~drawn.acs)
        # Achieved acceleration lies between the ACS-corrected bound and the nominal R.
        lower = n / (round(n * cf) + np.ceil(n / accel))
        assert lower - 1e-9 <= drawn.achieved_acceleration <= accel + 1e-9


@pytest.mark.parametrize("accel, cf, n", [(4, 0.08, 320), (8, 0.04, 368), (6, 0.06, 256)])
def test_equispaced_fraction_mask_hits_acceleration_per_mask(accel: int, cf: float, n: int) -> None:
    func = EquispacedFractionMask([cf], [accel])
    for seed in range(10):
        drawn = func(n, seed=seed)
        _acs_ok(drawn, n, cf)
        assert abs(drawn.achieved_acceleration - accel) / accel < 0.05


def test_masks_choose_among_pairs_and_seeds_reproduce() -> None:
    func = RandomMask([0.08, 0.04], [4, 8])
    a, b = func(N, seed=123), func(N, seed=123)
    assert np.array_equal(a.mask, b.mask) and a.acceleration == b.acceleration
    chosen = {func(N, seed=s).acceleration for s in range(30)}
    assert chosen == {4.0, 8.0}
    for drawn in (func(N, seed=s) for s in range(30)):
        assert (drawn.acceleration, drawn.center_fraction) in {(4.0, 0.08), (8.0, 0.04)}
    # The object's own generator is seeded too.
    first = [RandomMask([0.08], [4], seed=7)(N).mask for _ in range(2)]
    second = RandomMask([0.08], [4], seed=7)(N).mask
    assert np.array_equal(first[0], second)
    draws = [EquispacedMask([0.08], [4])(N, seed=np.random.default_rng(5)).mask for _ in range(2)]
    assert np.array_equal(draws[0], draws[1])


def test_kspace_mask_broadcasts_against_kspace() -> None:
    drawn = EquispacedMask([0.08], [4])(64, seed=0)
    kmask = drawn.kspace_mask()
    assert kmask.shape == (64, 1) and kmask.dtype == torch.bool
    kspace = torch.ones(2, 3, 64, 48, dtype=torch.complex64)
    masked = kspace * kmask
    assert torch.equal(masked[0, 0, :, 5].real.bool(), drawn.torch())
    assert torch.equal(drawn.acs_kspace_mask().flatten(), torch.from_numpy(drawn.acs))
    assert as_kspace_mask(drawn.torch()).shape == (64, 1)


@pytest.mark.parametrize(
    "cls, cfs, accels, match",
    [
        (RandomMask, [0.08], [0.5], "accelerations"),
        (RandomMask, [0.0], [4], "center_fractions"),
        (RandomMask, [1.0], [4], "center_fractions"),
        (RandomMask, [0.08, 0.04], [4], "same length"),
        (RandomMask, [], [], "must not be empty"),
        (EquispacedMask, [0.08], [2.5], "integers"),
    ],
)
def test_bad_arguments_raise(cls: type, cfs: list, accels: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(cfs, accels)


def test_bad_calls_raise() -> None:
    with pytest.raises(ValueError, match="no ACS line"):
        RandomMask([0.01], [4])(20, seed=0)
    with pytest.raises(ValueError, match="unreachable"):
        RandomMask([0.5], [4])(64, seed=0)
    with pytest.raises(ValueError, match="unreachable"):
        EquispacedFractionMask([0.5], [4])(64, seed=0)
    with pytest.raises(ValueError, match="num_lines"):
        RandomMask([0.08], [4])(1)
    with pytest.raises(TypeError, match="num_lines"):
        RandomMask([0.08], [4])(64.0)  # type: ignore[arg-type]
