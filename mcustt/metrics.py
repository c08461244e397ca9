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
        # Redis outages (issue 13): counted by mcustt.fanout.Hub
        self.broker_reconnects = Counter(
            "mcustt_broker_reconnects_total",
            "Times this node's broker connection came back after a loss (viewers resync)",
            registry=r,
        )
        self.finals_replayed = Counter(
            "mcustt_finals_replayed_total",
            "Finals a viewer got from the store, not live (lastSeq replays, gap fills, resyncs)",
            registry=r,
        )
        # issue 13: drains and admission control (mcustt.admission, mcustt.drain)
        self.drains = Counter("mcustt_drains_total", "Drains started (SIGTERM)", registry=r)
        self.draining = Gauge("mcustt_draining", "1 while this node is draining", registry=r)
        self.admissions_refused = Counter(
            "mcustt_admissions_refused_total",
            "New producers and viewers refused (draining, overloaded, producer cap)",
            ["reason"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "mcustt_event_loop_lag_seconds",
            "Event-loop lag of this node (p90 over the last 2 s)",
            registry=r,
        )
        self.loop_busy = Gauge(
            "mcustt_event_loop_busy_ratio",
            "Share of the last 1 s this node's event-loop thread spent on the CPU",
            registry=r,
        )
        self.recognizer_load = Gauge(
            "mcustt_recognizer_load",
            "The recognizer's backlog, 0 idle .. 1 saturated (p90 over 2 s; engines "
            "that report one)",
            registry=r,
        )
        # PostgreSQL outages (issue 13): mcustt.outages, mcustt.commits
        self.store_outages = Counter(
            "mcustt_store_outages_total",
            "Times this node found the database unreachable after it had answered",
            registry=r,
        )
        self.finals_buffered = Gauge(
            "mcustt_finals_buffered",
            "Finals (and other ordered writes) waiting for the database to be stored",
            registry=r,
        )
        self.store_unavailable = Counter(
            "mcustt_store_unavailable_total",
            "Requests and upgrades refused 503 because the database was unreachable",
            registry=r,
        )
        # Node failover (issue 13)
        self.producer_takeovers = Counter(
            "mcustt_producer_takeovers_total",
            "Producer claims taken over from a node whose heartbeat had stopped",
            registry=r,
        )
        self.viewer_resumes = Counter(
            "mcustt_viewer_resumes_total",
            "Viewer connects resuming after a seq (lastSeq / Last-Event-ID > 0)",
            registry=r,
        )
        self.node_heartbeat_age = Gauge(
            "mcustt_node_heartbeat_age_seconds",
            "Seconds since this node last renewed its heartbeat row",
            registry=r,
        )
        # -- issue 17: caption health (observed by mcustt.caption_health) ----------------
        self.caption_final = Histogram(
            "mcustt_caption_final_seconds",
            "End of speech (VAD, minus its trailing silence) to the final made",
            buckets=(0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5),
            registry=r,
        )
        self.caption_delivery = Histogram(
            "mcustt_caption_delivery_seconds",
            "Final made (its ts) to its send completed on a live viewer's socket or stream",
            ["transport"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.caption_first_interim = Histogram(
            "mcustt_caption_first_interim_seconds",
            "Speech start (VAD) to the utterance's first interim",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5),
            registry=r,
        )
        self.caption_interim_interval = Histogram(
            "mcustt_caption_interim_interval_seconds",
            "Between consecutive interims of one utterance",
            buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5),
            registry=r,
        )
        #: asyncio tasks of the node's event loop, read at each scrape (leak checks)
        self.tasks = Gauge("mcustt_tasks", "asyncio tasks alive on this node", registry=r)
