"""Preparation by name: tasks, network-ready inputs for every 2D task, batching, scale restoration, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mrdserve.models.data import manifest_schema
from mrdserve.models.data.prepare import (
    PREPARATION_SPECS,
    TASKS,
    PreparedSample,
    collate,
    output_to_image,
    prepare_sample,
    task_of,
)
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.simulate import simulate_cartesian, simulate_cartesian_3d, simulate_noncartesian
from mrdserve.models.nets.registry import build_network
from mrdserve.models.physics.fft import ifftnc
from mrdserve.models.training.datasets import sample_from_simulation

N = 32


def _cartesian(coils: int, seed: int, acceleration: float = 4, noise: float = 0.01) -> KSpaceSample:
    sim = simulate_cartesian(N, coils, acceleration, center_fraction=0.16, noise_level=noise,
                             with_noise_scan=False, seed=seed)  # readout oversampling 2, removed by the helper
    return sample_from_simulation(sim)


def _noncartesian(trajectory: str, coils: int, seed: int) -> KSpaceSample:
    sim = simulate_noncartesian(trajectory, N, coils, acceleration=2, with_noise_scan=False, seed=seed)
    return sample_from_simulation(sim)


CASES = {
    "cartesian-multicoil": (lambda s: _cartesian(4, s), "cartesian-sense", "cartesian2d-multicoil",
                            ("xpdnet", {"n_iter": 1, "n_primal": 2})),
    "cartesian-singlecoil": (lambda s: _cartesian(1, s), "cartesian-sense", "cartesian2d-singlecoil",
                             ("xpdnet", {"n_iter": 1, "n_primal": 2})),
    "radial-multicoil": (lambda s: _noncartesian("radial", 4, s), "noncartesian-toeplitz",
                         "noncartesian2d-multicoil",
                         ("ncpdnet", {"n_iter": 1, "n_primal": 2, "n_filters": 4, "multicoil": True})),
    "spiral-multicoil": (lambda s: _noncartesian("spiral", 4, s), "noncartesian-toeplitz",
                         "noncartesian2d-multicoil",
                         ("ncpdnet", {"n_iter": 1, "n_primal": 2, "n_filters": 4, "multicoil": True})),
    "radial-singlecoil": (lambda s: _noncartesian("radial", 1, s), "noncartesian-toeplitz",
                          "noncartesian2d-singlecoil",
                          ("ncpdnet", {"n_iter": 1, "n_primal": 2, "n_filters": 4})),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prepared_batch_runs_the_network(case: str) -> None:
    make, preparation, task, (network, kwargs) = CASES[case]
    samples = [make(1), make(2)]
    assert task_of(samples[0]) == task and task in TASKS
    prepared = [prepare_sample(sample, preparation) for sample in samples]
    for item in prepared:
        assert item.scale.shape == (1,) and float(item.scale) > 0
        assert item.matrix == (N, N) and item.recon_matrix == (N, N) and item.task == task
        assert all(t.shape[0] == 1 and t.dtype == torch.float32 for t in item.inputs.values())
    batch = collate(prepared)
    assert list(batch) == list(prepared[0].inputs)
    if preparation == "noncartesian-toeplitz":
        assert batch["kernel"].shape == (2, 2 * N, 2 * N, 2)
        assert ("smaps" in batch) == task.endswith("multicoil")
    torch.manual_seed(0)
    with torch.no_grad():
        output = build_network(network, **kwargs)(**batch)
    assert output.shape == (2, N, N) and torch.isfinite(output).all()
    image = output_to_image(output, torch.cat([p.scale for p in prepared]), prepared[0].recon_matrix)
    assert image.shape == (2, N, N)


def test_zero_filled_input_restored_to_data_units() -> None:
    """Fully sampled, noiseless: the SENSE-combined prepared k-space times the scale is the ground truth."""
    sim = simulate_cartesian(N, 4, 1, center_fraction=0.25, noise_level=0.0, readout_oversampling=1,
                             with_noise_scan=False, seed=4)
    prepared = prepare_sample(sample_from_simulation(sim), "cartesian-sense", {"sensitivities": "acs"})
    kspace = torch.view_as_complex(prepared.inputs["kspace"])
    smaps = torch.view_as_complex(prepared.inputs["smaps"])
    combined = (smaps.conj() * ifftnc(kspace, 2)).sum(1).abs() / smaps.abs().square().sum(1).clamp(min=1e-6).sqrt()
    restored = output_to_image(combined, prepared.scale, (N, N))[0]
    truth = sim.ground_truth[0].abs()
    inside = truth > 0.1 * truth.max()
    assert torch.allclose(restored[inside], truth[inside], rtol=0.05, atol=0.02)
    assert float(prepared.scale) < float(truth.max())  # the 99th percentile, so inputs are O(1)


def test_output_to_image_scales_and_crops() -> None:
    output = torch.ones(2, 8, 6)
    image = output_to_image(output, torch.tensor([2.0, 3.0]), (4, 6))
    assert image.shape == (2, 4, 6)
    assert torch.equal(image[0], torch.full((4, 6), 2.0)) and torch.equal(image[1], torch.full((4, 6), 3.0))
    ramp = torch.arange(8.0).reshape(1, 8, 1).expand(1, 8, 6)
    assert torch.equal(output_to_image(ramp, torch.ones(1), (4, 6))[0, :, 0], torch.tensor([2.0, 3, 4, 5]))
    with pytest.raises(ValueError, match="scale"):
        output_to_image(output, torch.ones(3), (4, 6))


def test_task_of_3d() -> None:
    sim = simulate_noncartesian("stack-of-stars", (8, 16, 16), 2, acceleration=4, with_noise_scan=False)
    assert task_of(sample_from_simulation(sim)) == "noncartesian3d"
    cartesian = simulate_cartesian_3d((8, 16, 16), 2, with_noise_scan=False, readout_oversampling=1)
    volume = KSpaceSample(kspace=cartesian.kspace[0], matrix=(8, 16, 16), recon_matrix=(8, 16, 16))
    with pytest.raises(ValueError, match="no task for 3D Cartesian"):
        task_of(volume)


def test_sample_preparation_mismatches_are_errors() -> None:
    cartesian = _cartesian(4, 1)
    with pytest.raises(ValueError, match="serves noncartesian"):
        prepare_sample(cartesian, "noncartesian-toeplitz")
    with pytest.raises(ValueError, match="serves cartesian"):
        prepare_sample(_noncartesian("radial", 2, 1), "cartesian-sense")
    with pytest.raises(ValueError, match="ACS"):
        prepare_sample(dataclasses.replace(cartesian, acs_mask=None), "cartesian-sense")
    with pytest.raises(ValueError, match="unknown preparation"):
        prepare_sample(cartesian, "grappa")
    with pytest.raises(ValueError, match=r"no parameter.*density"):
        prepare_sample(cartesian, "cartesian-sense", {"density": "pipe-menon"})
    with pytest.raises(ValueError, match="'sensitivities' must be one of"):
        prepare_sample(cartesian, "cartesian-sense", {"sensitivities": "walsh"})
    with pytest.raises(ValueError, match="carries no density"):
        prepare_sample(_noncartesian("radial", 1, 1), "noncartesian-toeplitz", {"density": "given"})


def test_single_coil_without_smaps_for_pdnet() -> None:
    prepared = prepare_sample(_cartesian(1, 3), "cartesian-sense", {"with_smaps": False})
    assert list(prepared.inputs) == ["kspace", "mask"]
    with torch.no_grad():
        output = build_network("pdnet", n_iter=1, n_primal=2, n_dual=2, n_filters=4)(**prepared.inputs)
    assert output.shape == (1, N, N)


def test_collate_refuses_mixed_samples() -> None:
    a = PreparedSample(inputs={"x": torch.zeros(1, 4)}, scale=torch.ones(1), matrix=(4,), recon_matrix=(4,))
    b = PreparedSample(inputs={"y": torch.zeros(1, 4)}, scale=torch.ones(1), matrix=(4,), recon_matrix=(4,))
    with pytest.raises(ValueError, match="different"):
        collate([a, b])
    with pytest.raises(ValueError, match="at least one"):
        collate([])
    assert set(PREPARATION_SPECS) == {"cartesian-sense", "noncartesian-toeplitz"}


def test_preparations_are_keyed_by_the_one_list_of_names() -> None:
    """prepare.py's specs cover exactly the manifest's preparation names and serve only (and all) its tasks."""
    assert TASKS is manifest_schema.TASKS
    assert tuple(PREPARATION_SPECS) == manifest_schema.PREPARATIONS
    assert all(spec.name == name for name, spec in PREPARATION_SPECS.items())
    assert {task for spec in PREPARATION_SPECS.values() for task in spec.tasks} == set(TASKS)
