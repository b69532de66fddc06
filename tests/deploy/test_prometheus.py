"""Prometheus config, alert rules and the Grafana dashboard: structure, and every PromQL metric name and label
checked against what ``service.metrics.ServiceMetrics`` really exposes (promtool is not available here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from mrdserve.service.metrics import STAGES, ServiceMetrics
from tests.deploy.promql import balanced, selectors

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",), "gauge": ("",)}
OTHER_METRICS = {"up"}  # Prometheus' own per-target series


def exposed() -> dict[str, set[str]]:
    """Every series name a fresh ServiceMetrics exposes (histogram and counter suffixes included) -> label names."""
    metrics = ServiceMetrics()
    declared = {m._name: set(m._labelnames) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    names: dict[str, set[str]] = {}
    for metric in metrics.registry.collect():
        labels = declared[metric.name]
        for suffix in SUFFIXES[metric.type]:
            names[metric.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
            for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "mrdserve.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def check_expression(expr: str) -> None:
    assert balanced(expr), expr
    series = exposed()
    used = selectors(expr)
    assert any(s.metric.startswith("mrdserve_") or s.metric in OTHER_METRICS for s in used), expr
    for selector in used:
        if selector.metric in OTHER_METRICS:
            continue
        assert selector.metric in series, f"{selector.metric} is not exposed by ServiceMetrics (in {expr})"
        for label, _, value in selector.matchers:
            if label in ("instance", "job"):
                continue
            assert label in series[selector.metric], f"{selector.metric} has no label {label!r} (in {expr})"
            if label == "stage":
                assert value in STAGES, value


def test_exposed_names_include_the_documented_metrics():
    names = exposed()
    for name in ("mrdserve_requests_total", "mrdserve_stage_seconds_bucket", "mrdserve_batch_size_sum",
                 "mrdserve_queue_depth", "mrdserve_cache_hits_total", "mrdserve_artifact_info",
                 "mrdserve_inflight_requests", "mrdserve_pacs_push_total"):
        assert name in names
    assert names["mrdserve_stage_seconds_bucket"] == {"stage", "le"}


def test_selector_extraction_sees_names_and_labels():
    found = selectors('histogram_quantile(0.95, sum by (le) (rate(mrdserve_stage_seconds_bucket{stage="total"}[5m])))')
    assert [(s.metric, s.matchers) for s in found] == [("mrdserve_stage_seconds_bucket", (("stage", "=", "total"),))]
    with pytest.raises(AssertionError):
        check_expression("rate(mrdserve_stage_seconds[5m])")  # a histogram has no bare series
    with pytest.raises(AssertionError):
        check_expression('sum(rate(mrdserve_requests_total{stage="x"}[5m]))')


def test_prometheus_config_scrapes_mrdserve_and_loads_the_rules():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert DURATION.match(config["global"]["scrape_interval"])
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["mrdserve"]["metrics_path"] == "/metrics"
    assert jobs["mrdserve"]["static_configs"][0]["targets"] == ["mrdserve:8000"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert "./prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"]["volumes"]


def test_alert_rules_are_well_formed_and_use_real_metrics():
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {"MrdserveLatencyP95High", "MrdserveErrorRateHigh", "MrdserveQueueSaturated"} <= names
    assert len(names) == len(rules)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule["alert"]
        assert DURATION.match(str(rule.get("for", "0m"))), rule["alert"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]
        check_expression(rule["expr"])
    latency = next(r for r in rules if r["alert"] == "MrdserveLatencyP95High")["expr"]
    assert "histogram_quantile(0.95" in latency and "mrdserve_stage_seconds_bucket" in latency


def test_dashboard_covers_stages_batches_queues_throughput_and_errors():
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        check_expression(expr)
    joined = "\n".join(exprs)
    for needle in ("mrdserve_stage_seconds_bucket", "mrdserve_batch_size", "mrdserve_queue_depth",
                   "mrdserve_requests_total", 'outcome=~"failed|rejected"'):
        assert needle in joined
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "mrdserve.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
