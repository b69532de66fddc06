"""Training datasets: deterministic synthetic examples, fastMRI and ISMRMRD directories, batching, versions."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
import torch
from torch.utils.data import DataLoader

from mrdserve.models.data.prepare import output_to_image
from mrdserve.models.data.simulate import GROUND_TRUTH_GROUP, simulate_to_file
from mrdserve.models.physics.masks import EquispacedFractionMask, RandomMask
from mrdserve.models.training.datasets import (
    FastMRIDataset,
    IsmrmrdDataset,
    SyntheticDataset,
    TrainingBatch,
    collate_examples,
    data_version,
)

N = 32


def test_synthetic_cartesian_is_deterministic_with_fresh_masks() -> None:
    dataset = SyntheticDataset("cartesian2d-multicoil", 3, matrix=N, coils=4, acceleration=4,
                               mask_type="random", center_fraction=0.16, seed=7)
    first, again, second = dataset[0], dataset[0], dataset[1]
    assert torch.equal(first.inputs["kspace"], again.inputs["kspace"]) and torch.equal(first.target, again.target)
    assert not torch.equal(first.inputs["mask"], second.inputs["mask"])
    assert first.target.shape == (1, N, N) and first.scale.shape == (1,)
    assert first.meta == {"source": "synthetic", "task": "cartesian2d-multicoil", "index": 0, "slice": 0}
    other_seed = SyntheticDataset("cartesian2d-multicoil", 3, matrix=N, coils=4, acceleration=4,
                                  mask_type="random", center_fraction=0.16, seed=8)
    assert not torch.equal(other_seed[0].target, first.target)
    assert not torch.equal(other_seed[0].target, second.target)  # (seed 8, index 0) is not (seed 7, index 1)


def test_synthetic_target_restores_ground_truth() -> None:
    dataset = SyntheticDataset("noncartesian2d-multicoil", 2, matrix=N, coils=4, trajectory="spiral", seed=1)
    example = dataset[1]
    truth = dataset.simulate(1).ground_truth[0].abs()
    restored = output_to_image(example.target, example.scale, (N, N))[0]
    assert torch.allclose(restored, truth, rtol=1e-5, atol=1e-6)
    assert 0.3 < float(example.target.max()) < 5  # normalised units, O(1)


def test_synthetic_noncartesian_keeps_one_trajectory() -> None:
    dataset = SyntheticDataset("noncartesian2d-singlecoil", 2, matrix=N, coils=8, trajectory="radial")
    a, b = dataset[0], dataset[1]
    assert torch.equal(a.inputs["kernel"], b.inputs["kernel"])
    assert list(a.inputs) == ["adjoint", "kernel"] and a.inputs["adjoint"].shape == (1, N, N, 2)
    assert not torch.equal(a.inputs["adjoint"], b.inputs["adjoint"])


def test_dataloader_batches() -> None:
    dataset = SyntheticDataset("cartesian2d-singlecoil", 4, matrix=N, acceleration=4, center_fraction=0.16)
    batches = list(DataLoader(dataset, batch_size=2, collate_fn=collate_examples))
    assert len(batches) == 2 and isinstance(batches[0], TrainingBatch) and len(batches[0]) == 2
    batch = batches[0].to("cpu")
    assert batch.inputs["kspace"].shape == (2, 1, N, N, 2) and batch.target.shape == (2, N, N)
    assert batch.scale.shape == (2,) and [m["index"] for m in batch.meta] == [0, 1]
    assert batch.crop(torch.zeros(2, N + 4, N)).shape == (2, N, N)


def test_data_version_tracks_parameters() -> None:
    make = lambda **kw: SyntheticDataset("cartesian2d-multicoil", 2, matrix=N, **kw)  # noqa: E731
    assert data_version(make()) == data_version(make())
    assert data_version(make()) != data_version(make(seed=1))
    assert data_version(make()) != data_version(make(noise_level=0.02))


def test_synthetic_argument_errors() -> None:
    with pytest.raises(ValueError, match="task must be one of"):
        SyntheticDataset("cartesian3d", 2)
    with pytest.raises(ValueError, match="does not fit task"):
        SyntheticDataset("cartesian2d-multicoil", 2, trajectory="radial")
    with pytest.raises(ValueError, match="does not serve task"):
        SyntheticDataset("cartesian2d-multicoil", 2, preparation="noncartesian-toeplitz")
    with pytest.raises(ValueError, match="mask_type"):
        SyntheticDataset("cartesian2d-multicoil", 2, mask_type="poisson")
    with pytest.raises(IndexError):
        SyntheticDataset("cartesian2d-multicoil", 2)[2]


def test_missing_and_empty_directories_name_the_path(tmp_path: Path) -> None:
    mask = EquispacedFractionMask([0.16], [4])
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=str(missing)):
        FastMRIDataset(missing, mask)
    with pytest.raises(ValueError, match=f"{tmp_path}.*no .h5 files"):
        IsmrmrdDataset(tmp_path)


def test_fastmri_directory_undersampled_retrospectively(tmp_path: Path) -> None:
    sim = simulate_to_file(tmp_path / "a.h5", coils=4, acceleration=1, matrix=N, slices=2, seed=2,
                           fmt="fastmri", noise_scan=False)
    dataset = FastMRIDataset(tmp_path, RandomMask([0.16], [4]), params={"sensitivities": "acs"}, seed=3)
    assert len(dataset) == 2
    example = dataset[1]
    assert example.meta == {"source": "fastmri", "file": "a.h5", "index": 1, "slice": 1}
    mask = example.inputs["mask"]
    assert mask.shape == (1, 1, N, N) and 0.15 < float(mask.mean()) < 0.5
    restored = output_to_image(example.target, example.scale, (N, N))[0]
    assert torch.allclose(restored, sim.ground_truth[1].abs(), rtol=1e-4, atol=1e-5)
    assert torch.equal(dataset[1].inputs["mask"], mask)
    assert torch.equal(dataset.sample(1).mask[:, 0].float(), mask[0, 0, :, 0])  # what baselines reconstruct
    version = data_version(dataset)
    simulate_to_file(tmp_path / "b.h5", coils=4, acceleration=1, matrix=N, seed=4, fmt="fastmri",
                     noise_scan=False)
    assert data_version(FastMRIDataset(tmp_path, RandomMask([0.16], [4]), seed=3)) != version


def test_fastmri_refuses_undersampled_files(tmp_path: Path) -> None:
    simulate_to_file(tmp_path / "u.h5", coils=2, acceleration=4, matrix=N, fmt="fastmri", noise_scan=False)
    with pytest.raises(ValueError, match="already undersampled"):
        FastMRIDataset(tmp_path, RandomMask([0.16], [4]))[0]


def test_ismrmrd_directory_with_simulated_and_plain_files(tmp_path: Path) -> None:
    radial = simulate_to_file(tmp_path / "radial.h5", trajectory="radial", coils=2, acceleration=2, matrix=N,
                              seed=1, noise_scan=False)
    dataset = IsmrmrdDataset(tmp_path)
    example = dataset[0]
    assert example.meta["file"] == "radial.h5" and "adjoint" in example.inputs
    restored = output_to_image(example.target, example.scale, (N, N))[0]
    assert torch.allclose(restored, radial.ground_truth[0].abs(), rtol=1e-4, atol=1e-5)

    plain = tmp_path / "plain"
    plain.mkdir()
    full = simulate_to_file(plain / "full.h5", coils=4, acceleration=1, matrix=N, seed=5, noise=0.0,
                            noise_scan=False)
    with h5py.File(plain / "full.h5", "a") as f:
        del f[GROUND_TRUTH_GROUP]
    with pytest.raises(ValueError, match="give a mask_func"):
        IsmrmrdDataset(plain)[0]
    example = IsmrmrdDataset(plain, mask_func=EquispacedFractionMask([0.16], [4]),
                             params={"sensitivities": "acs"})[0]
    assert float(example.inputs["mask"].mean()) < 0.5
    restored = output_to_image(example.target, example.scale, (N, N))[0]
    assert torch.allclose(restored, full.ground_truth[0].abs(), rtol=1e-3, atol=1e-3)


def test_varied_synthetic_data_go_through_the_ismrmrd_path():
    """Per-example draws of matrix, coils, mask and noise; the sample is what the serving reader gives
    (prewhitened, oversampling removed) and the target is in the same units (fully sampled RSS matches it)."""
    from mrdserve.models.physics.classical import rss
    from mrdserve.models.physics.fft import ifftnc

    varied = SyntheticDataset("cartesian2d-multicoil", 6, matrix=[32, 48, 64], coils=[2, 4],
                              acceleration=[2.0, 4.0], mask_type=["equispaced_fraction", "random"],
                              noise_level=[0.002, 0.02], ismrmrd_path=True, seed=3)
    draws = [varied.draw(i) for i in range(6)]
    assert draws == [varied.draw(i) for i in range(6)]  # a pure function of (seed, index)
    assert len({d["matrix"] for d in draws}) >= 2 and {d["coils"] for d in draws} <= {2, 4}
    assert all(2.0 <= d["acceleration"] <= 4.0 and 0.002 <= d["noise_level"] <= 0.02 for d in draws)
    example = varied[0]
    assert varied.sample(0).prewhitened
    assert tuple(example.target.shape[1:]) == draws[0]["matrix"]
    full = SyntheticDataset("cartesian2d-multicoil", 1, matrix=48, coils=4, acceleration=1.0, noise_level=1e-4,
                            ismrmrd_path=True, seed=4)
    sample, target = full.sample(0), full.target(0)
    combined = rss(ifftnc(sample.kspace[None], 2), dim=1)[0]
    assert float((combined - target).norm() / target.norm()) < 0.05
    families = SyntheticDataset("cartesian2d-multicoil", 8, matrix=[32, 48, 64], content=["textured", "piecewise"],
                                seed=5)
    assert {families.draw(i)["content"] for i in range(8)} == {"textured", "piecewise"}
    with pytest.raises(ValueError, match="log-uniformly"):
        SyntheticDataset("cartesian2d-multicoil", 2, matrix=[32, 48, 64], noise_level=[0.0, 0.01])
