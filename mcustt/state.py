"""The node's services in one explicit object (uvicorn's ``ServerState`` pattern).

:func:`open_state` builds every service completely, in dependency order, and closes
them in the reverse order when it exits (one ``AsyncExitStack``): a service is never
seen half-built, and a start-up that fails half-way closes what it had opened. The
transports (REST handlers, sockets, WHIP) reach it with :func:`app_state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.requests import HTTPConnection

from mcustt.admission import Gate
from mcustt.bridges import BridgeService
from mcustt.config import Settings
from mcustt.corrections import Corrections
from mcustt.denoise import make_suppressor
from mcustt.fanout import Hub
from mcustt.jobs import JobRunner
from mcustt.limits import RateLimiter
from mcustt.metrics import Metrics
from mcustt.nodes import NodeHeartbeat
from mcustt.outages import StoreHealth
from mcustt.pipeline import PipelineConfig, PipelineRegistry, Suppressor
from mcustt.recognizers import Recognizer, load_recognizer
from mcustt.retention import Retention
from mcustt.sessions import SessionService
from mcustt.speech import TextToSpeech
from mcustt.store.db import Database, check_schema
from mcustt.store.meta import jwt_secret
from mcustt.store.repo import Repo
from mcustt.summarizers import Summarizer, load_summarizer
from mcustt.tokens import TokenIssuer, random_id
from mcustt.transcribe import FileTranscriber
from mcustt.tts import load_synthesizer
from mcustt.usage import UsageMeter
from mcustt.vad import endpointing_of
from mcustt.webhooks import WebhookService

log = structlog.get_logger(__name__)


@dataclass
class AppState:
    settings: Settings
    node_id: str
    metrics: Metrics
    db: Database
    repo: Repo
    issuer: TokenIssuer
    sessions: SessionService
    limiter: RateLimiter
    hub: Hub
    recognizer: Recognizer
    summarizer: Summarizer
    usage: UsageMeter
    jobs: JobRunner
    pipelines: PipelineRegistry
    bridges: BridgeService
    #: webhook endpoints, their delivery workers, the polling triggers (issue 16)
    webhooks: WebhookService
    #: corrections of transcript lines (issue 16)
    corrections: Corrections
    #: text to speech: engine, stored audio, signed URLs (issue 16)
    tts: TextToSpeech
    #: file transcription: uploads and audio_url files into ended sessions (issue 15)
    transcriber: FileTranscriber
    #: admission control and drain state (issue 13)
    gate: Gate
    #: issue 13: whether the database answers (outages counted, probed until back)
    store_health: StoreHealth

    def client_ip(self, conn: HTTPConnection) -> str:
        """The client's address (behind trusted proxies, uvicorn's ProxyHeadersMiddleware
        has put the right-most untrusted X-Forwarded-For hop in the scope)."""
        return conn.client.host if conn.client else "unknown"


def suppressor_factory(settings: Settings) -> Callable[[], Suppressor]:
    """What makes a live stream's noise suppressor (one per ``reduceNoise`` stream)."""
    return functools.partial(make_suppressor, settings)


@asynccontextmanager
async def open_state(settings: Settings) -> AsyncIterator[AppState]:
    """Every service of a node, started; closed in reverse order on exit."""
    s = settings
    async with AsyncExitStack() as stack:
        db = Database(s.database_url)
        stack.push_async_callback(db.aclose)
        await check_schema(db, migrate_on_start=s.migrate_on_start)
        repo = Repo(db)
        secret = s.jwt_secret or await jwt_secret(db)
        issuer = TokenIssuer(
            secret,
            ingest_ttl_s=s.ingest_token_ttl_s,
            read_ttl_s=s.read_token_ttl_s,
        )
        node_id = "node_" + random_id(8)
        metrics = Metrics()
        # issue 13: closed last of all (its retries of claim releases may run until then)
        store_health = StoreHealth(db.ping, metrics)
        stack.push_async_callback(store_health.aclose)
        # Issue 13: this node's heartbeat row exists before any claim names it, and goes
        # after the pipelines (closed first) have released their claims.
        heartbeat = NodeHeartbeat(repo, node_id, interval_s=s.node_heartbeat_s, metrics=metrics)
        await heartbeat.start()
        stack.push_async_callback(heartbeat.aclose)
        sessions = SessionService(repo, s, issuer, node_id=node_id, metrics=metrics)
        limiter = RateLimiter(s)
        stack.push_async_callback(limiter.aclose)
        summarizer = load_summarizer(s)
        stack.push_async_callback(summarizer.aclose)
        synthesizer = load_synthesizer(s)
        stack.push_async_callback(synthesizer.aclose)
        # Optional: an engine that cannot run (espeak-ng missing) answers 503 when asked,
        # and the rest of the node starts and reports ready all the same.
        tts = TextToSpeech(repo, synthesizer, s, secret=secret)
        recognizer = load_recognizer(s)
        await recognizer.start()
        stack.push_async_callback(recognizer.aclose)
        hub = Hub(s, metrics=metrics)
        await hub.start()
        # Viewers are disconnected after every pipeline has published its last final.
        stack.push_async_callback(hub.aclose)
        usage = UsageMeter(repo)
        # Writes what the pipelines counted since the last write (they are all
        # finalized by then).
        stack.push_async_callback(usage.aclose)
        await stack.enter_async_context(_task(usage.run(), "usage"))
        jobs = JobRunner(
            repo,
            summarizer,
            lease_s=s.job_lease_s,
            poll_s=s.job_poll_s,
            metrics=metrics,
            node_id=node_id,
        )
        # A job cut short is re-run after its lease, by any node.
        stack.push_async_callback(jobs.aclose)
        pipelines = PipelineRegistry(
            sessions=sessions,
            hub=hub,
            recognizer=recognizer,
            store=repo,
            usage=usage,
            metrics=metrics,
            config=PipelineConfig(
                vad_aggressiveness=s.vad_aggressiveness,
                max_utterance_ms=int(s.max_utterance_s * 1000),
                make_suppressor=suppressor_factory(s),
                store_outage_max_s=s.store_outage_max_s,
                store_outage_max_finals=s.store_outage_max_finals,
                store_health=store_health,
                endpointing=endpointing_of(s),
            ),
            on_ended=jobs.enqueue_session_summary,
        )
        # First to close of the services: live pipelines finalize, so every final
        # already recognized is persisted (and its summary queued).
        stack.push_async_callback(pipelines.aclose)
        # issue 13: admission control, with its lag monitor (cancelled on exit)
        gate = Gate(s, metrics, recognizer, lambda: len(pipelines))
        await stack.enter_async_context(_task(gate.run(), "admission-monitor"))
        # Jitsi bridge meetings (issue 14): its grace-period enders close before the
        # pipelines do (they end sessions through them).
        bridges = BridgeService(
            repo,
            sessions,
            s,
            lambda session, reason: pipelines.end_session(session, reason=reason),
        )
        stack.push_async_callback(bridges.aclose)
        retention = Retention(
            repo,
            pipelines.end_session,
            retention_days=s.retention_days,
            abandon_after_s=s.ingest_token_ttl_s,
            interval_s=s.retention_interval_s,
        )
        await stack.enter_async_context(_task(retention.run(), "retention"))
        transcriber = FileTranscriber(
            repo,
            recognizer,
            s,
            add_usage=usage.add,
            usage_today=usage.total,
            on_ended=jobs.enqueue_session_summary,
        )
        # Before the workers start: a queued transcription may be the first job taken.
        jobs.register("transcription", transcriber.run_job)
        jobs.start()
        webhooks = WebhookService(
            repo,
            allow_private=s.allow_private_urls,
            timeout_s=s.webhook_timeout_s,
            retry_base_s=s.webhook_retry_base_s,
            workers=s.webhook_workers,
            poll_s=s.webhook_poll_s,
            max_endpoints=s.webhook_max_endpoints,
            node_id=node_id,
            retention_days=s.retention_days,
            prune_interval_s=s.retention_interval_s,
        )
        # Deliveries cut short are attempted again after their lease, by any node.
        stack.push_async_callback(webhooks.aclose)
        webhooks.start()
        yield AppState(
            settings=s,
            node_id=node_id,
            metrics=metrics,
            db=db,
            repo=repo,
            issuer=issuer,
            sessions=sessions,
            limiter=limiter,
            hub=hub,
            recognizer=recognizer,
            summarizer=summarizer,
            usage=usage,
            jobs=jobs,
            pipelines=pipelines,
            bridges=bridges,
            webhooks=webhooks,
            corrections=Corrections(repo, hub.publish),
            tts=tts,
            transcriber=transcriber,
            gate=gate,
            store_health=store_health,
        )


@asynccontextmanager
async def _task(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """A background loop owned by the exit stack: cancelled (and awaited) on exit."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def app_state(conn: HTTPConnection) -> AppState:
    """The node's services, from any request or WebSocket of the app (set by the
    lifespan for as long as the app serves)."""
    state: AppState = conn.app.state.mcustt
    return state
