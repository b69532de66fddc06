"""Prometheus metrics of one engine, in their own registry (so tests and several engines never collide).

Who records what: the engine records the ``preparation``, ``queue`` and ``inference`` stages per sample, the
batch sizes, queue depths, cache hits and artifact info; the entry points (REST API, MRD server) record
``ingest``, ``output`` and ``total`` per request and count requests with ``count_request``. Expose with
``render(metrics.registry)``.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGES = ("ingest", "preparation", "queue", "inference", "posterior", "output", "total")
# seconds: from sub-millisecond queue waits to minute-long classical fallbacks on large data
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                 300.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class ServiceMetrics:
    """The service's metrics (conventional names and units) registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter("mrdserve_requests", "Reconstruction requests by entry point, artifact and outcome",
                                ("entrypoint", "artifact", "outcome"), registry=self.registry)
        self.stage_seconds = Histogram("mrdserve_stage_seconds", "Time spent per stage of a reconstruction",
                                       ("stage",), buckets=STAGE_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("mrdserve_batch_size", "Samples per inference batch", ("artifact",),
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("mrdserve_queue_depth", "Jobs waiting in an artifact's batch queue", ("artifact",),
                                 registry=self.registry)
        self.cache_hits = Counter("mrdserve_cache_hits", "Preparations that reused cached per-trajectory work "
                                  "(density weights, Toeplitz kernel)", registry=self.registry)
        self.artifact_info = Gauge("mrdserve_artifact_info", "Artifacts loaded by the engine (value 1)",
                                   ("name", "version", "task", "network"), registry=self.registry)
        self.inflight_requests = Gauge("mrdserve_inflight_requests", "Reconstruction requests being served now "
                                       "(all entry points; the autoscaling signal)", registry=self.registry)
        self.pacs_push = Counter("mrdserve_pacs_push", "Pushes of DICOM results to the PACS by protocol and outcome",
                                 ("protocol", "outcome"), registry=self.registry)
        for stage in STAGES:  # every stage shows up in /metrics from the start
            self.stage_seconds.labels(stage=stage)
        for protocol in ("dicomweb", "cstore"):
            for outcome in ("ok", "failed"):
                self.pacs_push.labels(protocol=protocol, outcome=outcome)

    def observe_stage(self, stage: str, seconds: float) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        self.stage_seconds.labels(stage=stage).observe(max(float(seconds), 0.0))

    def count_request(self, entrypoint: str, artifact: str, outcome: str) -> None:
        self.requests.labels(entrypoint=entrypoint, artifact=artifact, outcome=outcome).inc()

    def sample_value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of one sample (e.g. ``mrdserve_stage_seconds_count``), 0.0 when absent."""
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else float(value)


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in the Prometheus text format and its content type, for ``GET /metrics``."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
