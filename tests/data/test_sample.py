"""KSpaceSample.trajectory_key: the trajectory hashed once per sample, and the preparation hashing nothing more."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mrdserve.models.data.prepare import prepare_sample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.physics import nufft_cache
from mrdserve.models.physics.nufft import NufftOp
from mrdserve.models.physics.trajectories import radial_2d

SHAPE = (16, 16)


@pytest.fixture
def hashed(monkeypatch) -> list[tuple[int, ...]]:
    """Shapes of every tensor ``trajectory_hash`` hashes while the test runs."""
    shapes: list[tuple[int, ...]] = []
    tensor_hash = nufft_cache.tensor_hash

    def counting(tensor: torch.Tensor) -> str:
        shapes.append(tuple(tensor.shape))
        return tensor_hash(tensor)

    monkeypatch.setattr(nufft_cache, "tensor_hash", counting)
    return shapes


def _radial_sample() -> KSpaceSample:
    trajectory = radial_2d(12, 32)
    image = torch.randn(1, *SHAPE, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    kspace = NufftOp(trajectory, SHAPE).forward(image)[0]
    return KSpaceSample(kspace=kspace, matrix=SHAPE, recon_matrix=SHAPE, trajectory_type="radial",
                        trajectory=trajectory)


def test_trajectory_key_is_the_hash_computed_once(hashed):
    sample = _radial_sample()
    key = sample.trajectory_key
    assert key == nufft_cache.trajectory_hash(sample.trajectory.clone())
    hashed.clear()
    assert sample.trajectory_key == key and not hashed
    sample.trajectory.mul_(0.5)  # modified in place: hashed again
    assert sample.trajectory_key != key and len(hashed) == 1
    sample = dataclasses.replace(sample, trajectory=radial_2d(12, 32))  # a new sample with the original values
    assert sample.trajectory_key == key
    assert KSpaceSample(kspace=sample.kspace, matrix=SHAPE, recon_matrix=SHAPE).trajectory_key is None


def test_noncartesian_preparation_reuses_the_sample_key(hashed):
    sample = _radial_sample()
    key = sample.trajectory_key
    hashed.clear()
    prepared = prepare_sample(sample, "noncartesian-toeplitz")
    assert prepared.inputs["kernel"].shape == (1, 32, 32, 2)
    assert not hashed, f"the preparation hashed trajectories again: {hashed}"
    assert sample.trajectory_key == key


def test_a_sample_is_frozen_and_moves_as_a_new_sample():
    sample = _radial_sample()
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.kspace = sample.kspace * 2  # type: ignore[misc]
    moved = sample.to("cpu")
    assert moved is not sample and moved.trajectory_type == sample.trajectory_type
    assert torch.equal(moved.kspace, sample.kspace) and torch.equal(moved.trajectory, sample.trajectory)
    assert moved.density is None and moved.trajectory_key == sample.trajectory_key


@pytest.mark.parametrize("method", ["adjoint", "cg-sense"])
def test_the_classical_path_reuses_the_sample_key(hashed, method):
    """The classical non-Cartesian reconstruction hashes no full trajectory again (coil sensitivities may hash
    the small centre of k-space they calibrate on)."""
    from mrdserve.models.data.baseline import classical_reconstruction

    sample = _radial_sample()
    full = tuple(sample.trajectory.shape)
    sample.trajectory_key  # noqa: B018  # hashed here, once
    hashed.clear()
    classical_reconstruction(sample, method=method)
    assert full not in hashed, f"the full trajectory was hashed again: {hashed}"
