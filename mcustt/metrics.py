"""Prometheus metrics, one registry per app so tests and nodes don't share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "mcustt_http_requests_total", "HTTP requests", ["method", "status"], registry=r
        )
        self.sessions_created = Counter(
            "mcustt_sessions_created_total", "Sessions created", registry=r
        )
        self.finals = Counter("mcustt_finals_total", "Final transcript lines persisted", registry=r)
        self.audio_seconds = Counter(
            "mcustt_audio_seconds_total", "Audio seconds ingested", registry=r
        )
        self.producers = Gauge("mcustt_producers", "Producers connected to this node", registry=r)
        self.viewers = Gauge("mcustt_viewers", "Viewers connected to this node", registry=r)
        self.viewers_kicked = Counter(
            "mcustt_viewers_kicked_total", "Viewers disconnected for falling behind", registry=r
        )
        self.final_latency = Histogram(
            "mcustt_final_latency_seconds",
            "End of utterance to final persisted",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5),
            registry=r,
        )
        self.jobs = Counter("mcustt_jobs_total", "Jobs finished", ["kind", "status"], registry=r)
