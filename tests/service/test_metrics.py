"""Service metrics: conventional names, one registry per instance (no collisions), Prometheus text output."""

from __future__ import annotations

import pytest

from mrdserve.service.metrics import STAGES, ServiceMetrics, render


def test_each_instance_has_its_own_registry_and_exposes_every_stage():
    first, second = ServiceMetrics(), ServiceMetrics()
    first.observe_stage("inference", 0.02)
    first.count_request("rest", "demo-1", "ok")
    first.cache_hits.inc()
    first.queue_depth.labels(artifact="demo-1").set(3)
    first.artifact_info.labels(name="demo", version="1", task="t", network="n").set(1)
    assert first.sample_value("mrdserve_stage_seconds_count", {"stage": "inference"}) == 1
    assert second.sample_value("mrdserve_stage_seconds_count", {"stage": "inference"}) == 0
    text, content_type = render(first.registry)
    body = text.decode()
    assert content_type.startswith("text/plain")
    for stage in STAGES:
        assert f'mrdserve_stage_seconds_bucket{{le="0.001",stage="{stage}"}}' in body
    assert 'mrdserve_requests_total{artifact="demo-1",entrypoint="rest",outcome="ok"} 1.0' in body
    assert "mrdserve_cache_hits_total 1.0" in body
    assert 'mrdserve_queue_depth{artifact="demo-1"} 3.0' in body
    assert 'mrdserve_artifact_info{name="demo",network="n",task="t",version="1"} 1.0' in body


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="stage must be one of"):
        ServiceMetrics().observe_stage("coffee", 1.0)
