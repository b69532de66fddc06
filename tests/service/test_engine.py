"""The engine on real artifacts (the bundled ones when present, else a tiny exported NC-PDNet): ready after start,
learned results of the asynchronous driver equal to the synchronous one's, batching across requests, labelled
classical fallback, clear errors, metrics per stage."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.simulate import simulate_noncartesian
from mrdserve.service.artifacts import BUNDLED_ARTIFACTS, load_artifacts
from mrdserve.service.config import ServiceConfig
from mrdserve.service.engine.choice import Choice
from mrdserve.service.engine.engine import Engine, ShuttingDownError
from mrdserve.service.engine.plan import synthetic_sample
from mrdserve.service.offline_recon import offline_engine


def _usable_bundled() -> bool:
    try:
        found = load_artifacts([BUNDLED_ARTIFACTS]) if BUNDLED_ARTIFACTS.is_dir() else []
    except ValueError:  # an artifact being rewritten right now
        return False
    return any(a.manifest.task == "noncartesian2d-multicoil" for a in found)


@pytest.fixture(scope="module")
def artifact_root(tmp_path_factory):
    if _usable_bundled():
        return BUNDLED_ARTIFACTS
    from mrdserve.models.export.export import export_checkpoint
    from tests.export.test_export import write_checkpoint

    root = tmp_path_factory.mktemp("engine-artifacts")
    export_checkpoint(write_checkpoint(root / "ncpdnet.pt", "ncpdnet"), root / "artifacts")
    return root / "artifacts"


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def engine(loop, artifact_root):
    engine = Engine(ServiceConfig(artifacts=[artifact_root], device="cpu", max_batch=4, max_wait_ms=20))
    assert not engine.ready
    loop.run_until_complete(engine.start())
    yield engine
    loop.run_until_complete(engine.shutdown())


@pytest.fixture(scope="module")
def radial(engine):
    """An artifact serving multicoil radial data and a few samples that fit it (one trajectory, several slices)."""
    artifact = next(a for a in engine.artifacts if a.manifest.task == "noncartesian2d-multicoil"
                    and "radial" in a.manifest.constraints.trajectory)
    samples = [synthetic_sample(artifact, seed=seed) for seed in range(4)]
    return artifact, samples


def test_ready_after_start_and_models_listed(engine):
    assert engine.ready
    listed = engine.models()
    assert {m["label"] for m in listed} == {a.label for a in engine.artifacts}
    assert all(m["runner"] == "torchscript" and m["device"] == "cpu" for m in listed)
    first = engine.artifacts[0]
    assert engine.metrics.sample_value("mrdserve_artifact_info", {
        "name": first.name, "version": first.version, "task": first.manifest.task,
        "network": first.manifest.network}) == 1


def test_learned_result_equals_the_offline_reconstructor(loop, engine, radial):
    artifact, samples = radial
    [result] = loop.run_until_complete(engine.reconstruct(samples[:1], request_id="r1"))
    [offline] = offline_engine(engine.config.artifacts).reconstruct_sync(samples[:1])
    expected, label = offline.image, offline.label
    assert result.label == label == artifact.label and result.artifact == artifact.name
    assert result.fallback_reason is None and result.image.dtype == np.float32
    assert result.image.shape == expected.shape
    assert np.abs(result.image - expected).max() <= 1e-5 * np.abs(expected).max()
    assert {"preparation", "queue", "inference"} <= set(result.timings)


def test_concurrent_requests_share_batches_and_match_single_runs(loop, engine, radial):
    _, samples = radial
    before = engine.metrics.sample_value("mrdserve_batch_size_count", {"artifact": radial[0].label})

    async def many():
        return await asyncio.gather(*(engine.reconstruct([s], request_id=str(i)) for i, s in enumerate(samples)))

    batcher = engine._batchers[radial[0].label]
    batcher.max_wait_s = 30.0  # a full batch (4 = max_batch) leaves at once; no dependence on machine speed
    try:
        results = [r for [r] in loop.run_until_complete(many())]
    finally:
        batcher.max_wait_s = engine.config.max_wait_s
    batches = engine.metrics.sample_value("mrdserve_batch_size_count", {"artifact": radial[0].label}) - before
    assert batches == 1  # the four requests ran as one batch
    assert set(results[0].timings) == {"preparation", "queue", "inference"}
    alone = engine.reconstruct_sync(samples)
    for batched, single in zip(results, alone, strict=True):
        assert np.abs(batched.image - single.image).max() <= 1e-4 * np.abs(single.image).max()
    assert engine.metrics.sample_value("mrdserve_cache_hits_total") >= 1  # one trajectory, prepared repeatedly


def test_no_fitting_artifact_falls_back_to_classical_with_reason(loop, engine):
    sim = simulate_noncartesian("radial", 32, n_coils=1, acceleration=1, noise_level=0.0, with_noise_scan=False)
    single_coil = KSpaceSample(kspace=sim.kspace[0], matrix=sim.matrix, recon_matrix=sim.matrix,
                               trajectory_type="radial", trajectory=sim.trajectory)
    [result] = loop.run_until_complete(engine.reconstruct([single_coil]))
    assert result.label == "classical:l1-wavelet" and result.artifact is None and not result.is_learned
    assert "no artifact fits this data" in result.fallback_reason and "singlecoil" in result.fallback_reason
    assert result.image.shape == (32, 32) and np.isfinite(result.image).all()
    [forced] = engine.reconstruct_sync([single_coil], Choice.of("classical"))
    assert forced.fallback_reason == "classical reconstruction requested"


def test_unknown_artifact_is_a_clear_value_error(loop, engine, radial):
    with pytest.raises(ValueError, match="unknown artifact 'no-such-model'; known artifacts: "):
        loop.run_until_complete(engine.reconstruct(radial[1][:1], Choice.of("no-such-model")))
    [named] = loop.run_until_complete(engine.reconstruct(radial[1][:1], Choice.of(radial[0].name)))
    assert named.label == radial[0].label


def test_timeout_and_not_ready_errors(loop, engine, radial):
    with pytest.raises(TimeoutError, match="did not finish within"):
        loop.run_until_complete(engine.reconstruct(radial[1][:2], timeout_s=1e-4))
    with pytest.raises(ShuttingDownError, match="not ready"):
        asyncio.run(Engine(ServiceConfig(artifacts=[radial[0].path], device="cpu")).reconstruct(radial[1][:1]))


def test_stage_metrics_recorded(loop, engine, radial):
    def count(stage: str) -> float:
        return engine.metrics.sample_value("mrdserve_stage_seconds_count", {"stage": stage})

    before = {stage: count(stage) for stage in ("preparation", "queue", "inference")}
    loop.run_until_complete(engine.reconstruct(radial[1][:2]))
    assert all(count(stage) == before[stage] + 2 for stage in before)
    assert engine.metrics.sample_value("mrdserve_queue_depth", {"artifact": radial[0].label}) == 0


def test_the_classical_path_is_bounded_like_a_queue(tmp_path):
    """No artifact: every slice goes the classical way, which refuses (503) beyond queue_size + its workers."""
    from mrdserve.models.data.ismrmrd_io import read_ismrmrd
    from mrdserve.service.engine.batcher import QueueFullError
    from tests.service.hostile_peers import small_file

    engine = Engine(ServiceConfig(artifacts=[tmp_path], device="cpu", queue_size=1, warmup=False))
    sample = read_ismrmrd(small_file(tmp_path / "scan.h5", matrix=64, coils=4))[1][0]

    async def burst() -> list:
        await engine.start()
        try:
            return await asyncio.gather(*(engine.reconstruct([sample], Choice(method="l1-wavelet")) for _ in range(12)),
                                        return_exceptions=True)
        finally:
            await engine.shutdown()

    outcomes = asyncio.run(burst())
    refused = [o for o in outcomes if isinstance(o, QueueFullError)]
    answered = [o for o in outcomes if isinstance(o, list)]
    assert len(answered) == engine._classical_limit and len(refused) == 12 - len(answered)
    assert engine._classical_inflight == 0
    assert "classical reconstruction queue is full" in str(refused[0]) and refused[0].retry_after_s >= 1
