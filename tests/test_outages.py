"""Database outages without a database (issue 13, scenario 3): a pipeline whose store
is unreachable for a while, the commit queue's bounds, and the 503 the middleware
answers. ``tests/test_fault_postgres.py`` does the same with a real PostgreSQL restart.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from conftest import read_wav
from scripted import ScriptedRecognizer
from sqlalchemy import exc as sa_exc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket
from test_pipeline_unit import Log, Meter, session, tenant

from mcustt.commits import CommitQueue
from mcustt.config import Settings
from mcustt.errors import MCUSTTError
from mcustt.metrics import Metrics
from mcustt.outages import StoreGuard, StoreUnavailable, log_failure, store_unavailable
from mcustt.pipeline import PipelineConfig, SessionPipeline
from mcustt.store.models import TranscriptLine
from mcustt.wire import ChannelMessage, ErrorCode, ProducerEvent


def unreachable() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, OSError("connection refused"))


class FlakyStore:
    """A store that is unreachable while ``down`` is set (as SQLAlchemy reports it)."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.down = False
        self.last_seq = 0
        self.failed = 0

    def _check(self) -> None:
        if self.down:
            self.failed += 1
            raise unreachable()

    async def append_final(self, session_id: str, **line: Any) -> TranscriptLine:
        self._check()
        self.last_seq += 1
        line["seq"] = self.last_seq
        self.log.calls.append(("stored", line["seq"]))
        line.pop("audio_ms")
        return TranscriptLine(session_id=session_id, **line)

    async def set_detected_lang(self, session_id: str, lang: str) -> None:
        self._check()

    async def set_audio_ms(self, session_id: str, audio_ms: int) -> None:
        self._check()


class LostAnswerStore(FlakyStore):
    """Its first final lands, then the answer is lost (the connection died after the
    COMMIT); like the real store, a write with a key it has already stored returns
    that line."""

    def __init__(self, log: Log) -> None:
        super().__init__(log)
        self.by_key: dict[str, TranscriptLine] = {}
        self.lost = 0

    async def append_final(self, session_id: str, **line: Any) -> TranscriptLine:
        key = line["commit_key"]
        assert key, "the pipeline keys every final"
        if key in self.by_key:
            return self.by_key[key]
        stored = await super().append_final(session_id, **line)
        self.by_key[key] = stored
        if not self.lost:
            self.lost += 1
            raise unreachable()
        return stored


def build(
    log: Log, sink: list[ProducerEvent], store_class: type[FlakyStore] = FlakyStore, **config: Any
) -> tuple[SessionPipeline, FlakyStore, Metrics]:
    store, metrics = store_class(log), Metrics()

    async def publish(session_id: str, event: ChannelMessage) -> None:
        log.calls.append(("published", event))

    pipeline = SessionPipeline(
        session(),
        tenant(),
        sink.append,
        recognizer=ScriptedRecognizer(Settings()),
        store=store,
        publish=publish,
        usage=Meter(),
        metrics=metrics,
        config=PipelineConfig(vad_aggressiveness=2, max_utterance_ms=30_000, **config),
    )
    return pipeline, store, metrics


def buffered(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("mcustt_finals_buffered")
    assert value is not None
    return value


def finals(events: list[Any]) -> list[dict[str, Any]]:
    return [e for e in events if isinstance(e, dict) and e["type"] == "transcript" and e["isFinal"]]


async def push_all(pipeline: SessionPipeline, pcm: bytes) -> None:
    for i in range(0, len(pcm), 640):
        await pipeline.push(pcm[i : i + 640])


async def until(pred: Any, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


async def test_finals_made_while_the_store_is_down_are_kept_then_sent_in_order() -> None:
    log, sink = Log(), list[ProducerEvent]()
    pipeline, store, metrics = build(log, sink)
    store.down = True
    pipeline.start()
    # two utterances, both finalized while the store is unreachable: recognition goes
    # on (the second final is made while the first still waits)
    await push_all(pipeline, read_wav("pause_en.wav"))
    # (the engine's language is an ordered write too: it waits with them)
    await until(lambda: buffered(metrics) >= 3)
    assert not finals(sink) and not pipeline.finished.is_set() and store.failed >= 1
    # interims of later utterances carry the seq their final will get
    interims = [e for e in sink if e["type"] == "transcript" and not e["isFinal"]]
    assert [i["seq"] for i in interims] == [1, 2]

    store.down = False
    await pipeline.close()

    assert pipeline.failure is None
    published = [e for e in log.of("published") if isinstance(e, dict)]
    got = finals(published)
    assert [f["seq"] for f in got] == [1, 2]
    assert [f["text"] for f in got] == [i["text"] for i in interims]
    for f in got:  # stored before anyone was sent it
        assert log.calls.index(("stored", f["seq"])) < log.calls.index(("published", f))
    assert sink == published and buffered(metrics) == 0


async def test_a_final_whose_answer_was_lost_is_stored_and_sent_once() -> None:
    log, sink = Log(), list[ProducerEvent]()
    pipeline, store, _ = build(log, sink, LostAnswerStore)
    pipeline.start()
    await push_all(pipeline, read_wav("pause_en.wav"))
    await pipeline.close()
    assert pipeline.failure is None
    assert isinstance(store, LostAnswerStore) and store.lost == 1
    # the retry found the line that had landed: two finals, two lines, seqs 1 and 2
    assert store.last_seq == 2 and [c for c in log.calls if c[0] == "stored"] == [
        ("stored", 1),
        ("stored", 2),
    ]
    assert [f["seq"] for f in finals(sink)] == [1, 2]


async def test_an_outage_past_the_bound_stops_the_producer_not_what_it_was_sent() -> None:
    log, sink = Log(), list[ProducerEvent]()
    pipeline, store, metrics = build(log, sink, store_outage_max_s=0.3)
    pipeline.start()
    pcm = read_wav("pause_en.wav")
    half = len(pcm) // 2 // 640 * 640  # the first sentence and part of the pause
    await push_all(pipeline, pcm[:half])
    await until(lambda: len(finals(sink)) == 1)
    store.down = True
    await push_all(pipeline, pcm[half:])
    await pipeline.close()

    failure = pipeline.failure
    assert isinstance(failure, StoreUnavailable)
    assert failure.code == ErrorCode.STORE_UNAVAILABLE and failure.close_code == 1013
    # what was acknowledged is stored; the final that could not be stored went nowhere
    assert [f["seq"] for f in finals(sink)] == [1] and log.of("stored") == [1]
    assert finals(log.of("published")) == finals(sink) and buffered(metrics) == 0


async def test_the_queue_refuses_more_than_its_bound_of_waiting_finals() -> None:
    fatal: list[MCUSTTError] = []
    ran: list[int] = []
    down = True

    def commit(n: int) -> Any:
        async def run() -> None:
            if down:
                raise unreachable()
            ran.append(n)

        return run

    queue = CommitQueue(max_outage_s=30, max_pending=3, on_fatal=fatal.append)
    for n in range(3):
        queue.submit(commit(n))
    await queue.settled()  # returns once the store is found unreachable
    assert queue.stalled and queue.pending == 3 and not fatal
    queue.submit(commit(3))
    assert isinstance(fatal[0], StoreUnavailable) and queue.pending == 0
    with pytest.raises(StoreUnavailable):
        await queue.drain()
    down = False
    await asyncio.sleep(0.3)
    assert ran == []  # nothing dropped runs later either
    await queue.aclose()


async def test_a_commit_that_fails_for_another_reason_fails_the_queue() -> None:
    fatal: list[MCUSTTError] = []

    async def broken() -> None:
        raise sa_exc.IntegrityError("INSERT", {}, ValueError("duplicate"))

    queue = CommitQueue(max_outage_s=30, max_pending=10, on_fatal=fatal.append)
    queue.submit(broken)
    with pytest.raises(MCUSTTError):
        await queue.drain()
    assert fatal and fatal[0].code == ErrorCode.INTERNAL


def test_which_errors_mean_unreachable() -> None:
    import psycopg

    assert store_unavailable(unreachable())
    assert store_unavailable(psycopg.OperationalError("connection refused"))
    try:
        try:
            raise psycopg.errors.AdminShutdown("terminating connection")
        except psycopg.Error as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as wrapped:
        assert store_unavailable(wrapped)
    assert not store_unavailable(sa_exc.IntegrityError("INSERT", {}, ValueError("dup")))
    assert not store_unavailable(ValueError("not a database error"))


# -- the middleware ----------------------------------------------------------------------


async def down(request: Request) -> Response:
    raise unreachable()


async def broken(request: Request) -> Response:
    raise ValueError("a bug")


async def ws_down(ws: WebSocket) -> None:
    raise unreachable()  # while admitting, before the upgrade is accepted


def guarded() -> Starlette:
    return Starlette(
        routes=[
            Route("/down", down),
            Route("/broken", broken),
            WebSocketRoute("/ws", ws_down),
        ],
        middleware=[Middleware(StoreGuard)],
    )


async def test_requests_the_unreachable_store_failed_answer_503_with_retry_after() -> None:
    transport = httpx.ASGITransport(app=guarded(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/down")
        assert r.status_code == 503 and r.headers["retry-after"].isdigit()
        assert r.json()["error"]["code"] == "STORE_UNAVAILABLE"
        # any other failure stays what it was
        assert (await c.get("/broken")).status_code == 500


def test_upgrades_the_unreachable_store_failed_are_refused_503() -> None:
    with (
        TestClient(guarded()) as client,
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect("/ws"),
    ):
        pass
    assert refused.value.status_code == 503
    assert refused.value.headers["retry-after"].isdigit()
    assert refused.value.json()["error"]["code"] == "STORE_UNAVAILABLE"


def test_background_loops_log_an_outage_in_one_line_and_a_bug_with_its_traceback() -> None:
    import structlog

    log = structlog.get_logger("test")
    with structlog.testing.capture_logs() as logs:
        try:
            raise unreachable()
        except Exception as exc:
            log_failure(log, "job claim failed", exc, job_id="j1")
        try:
            raise KeyError("a bug")
        except Exception as exc:
            log_failure(log, "job claim failed", exc)
    outage, bug = logs
    assert outage["log_level"] == "warning" and "exc_info" not in outage
    assert outage["event"] == "job claim failed: database unavailable"
    assert outage["job_id"] == "j1"
    assert bug["log_level"] == "error" and bug["exc_info"] is True
