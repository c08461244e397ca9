"""A SessionPipeline built from its collaborators alone: no server, no database, no broker.

The pipeline's promises, seen from its collaborators: every final is stored before it is
published, seqs continue the session's without a gap, the producer's sink sees what the
viewers see, audio is counted for the tenant, and the daily cap stops the session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from conftest import read_wav
from scripted import ScriptedRecognizer

from mcustt.config import Settings
from mcustt.errors import DailyCapReached
from mcustt.metrics import Metrics
from mcustt.pipeline import PipelineConfig, SessionPipeline
from mcustt.store.models import Session, Tenant, TranscriptLine
from mcustt.wire import ChannelMessage, ErrorCode, ProducerEvent


@dataclass
class Log:
    """One timeline of what the pipeline did to its collaborators, in order."""

    calls: list[tuple[str, object]] = field(default_factory=list)

    def of(self, kind: str) -> list[object]:
        return [what for k, what in self.calls if k == kind]


class MemoryStore:
    def __init__(self, log: Log, last_seq: int = 0) -> None:
        self.log = log
        self.audio_ms = 0
        self.last_seq = last_seq

    async def append_final(self, session_id: str, **line: Any) -> TranscriptLine:
        # Like the real store: the seq is allocated here, the session's next one.
        if line.get("seq") is None:
            line["seq"] = self.last_seq + 1
        self.last_seq = line["seq"]
        self.log.calls.append(("stored", line["seq"]))
        line.pop("audio_ms")
        return TranscriptLine(session_id=session_id, **line)

    async def set_detected_lang(self, session_id: str, lang: str) -> None:
        self.log.calls.append(("detected", lang))

    async def set_audio_ms(self, session_id: str, audio_ms: int) -> None:
        self.audio_ms = audio_ms


class Meter:
    def __init__(self) -> None:
        self.used: dict[str, int] = {}
        self.flushes = 0

    def add(self, tenant_id: str, audio_ms: int) -> int:
        self.used[tenant_id] = self.used.get(tenant_id, 0) + audio_ms
        return self.used[tenant_id]

    async def flush(self) -> None:
        self.flushes += 1


def session(last_seq: int = 0, audio_ms: int = 0) -> Session:
    now = time.time()
    return Session(
        id="s123456789",
        tenant_id="tn_1",
        source_lang="en-US",
        auto_detect=False,
        owner_secret_hash="x",
        created_at=now,
        updated_at=now,
        last_seq=last_seq,
        audio_ms=audio_ms,
    )


def tenant(daily_minutes_cap: int = 600) -> Tenant:
    now = time.time()
    return Tenant(
        id="tn_1",
        name="acme",
        key_hash="x",
        key_prefix="sk_mcustt_x",
        daily_minutes_cap=daily_minutes_cap,
        created_at=now,
        updated_at=now,
    )


def build(
    log: Log, sink: list[ProducerEvent], *, last_seq: int = 0, cap_minutes: int = 600
) -> tuple[SessionPipeline, MemoryStore, Meter]:
    store, meter = MemoryStore(log, last_seq), Meter()

    async def publish(session_id: str, event: ChannelMessage) -> None:
        log.calls.append(("published", event))

    pipeline = SessionPipeline(
        session(last_seq=last_seq),
        tenant(cap_minutes),
        sink.append,
        recognizer=ScriptedRecognizer(Settings()),
        store=store,
        publish=publish,
        usage=meter,
        metrics=Metrics(),
        config=PipelineConfig(vad_aggressiveness=2, max_utterance_ms=30_000),
    )
    return pipeline, store, meter


async def feed(pipeline: SessionPipeline, pcm: bytes) -> None:
    pipeline.start()
    for i in range(0, len(pcm), 640):
        await pipeline.push(pcm[i : i + 640])
    await pipeline.close()


async def test_finals_are_stored_before_published_with_gap_free_seq() -> None:
    log, sink = Log(), list[ProducerEvent]()
    pipeline, store, meter = build(log, sink, last_seq=41)
    pcm = read_wav("pause_en.wav")  # two utterances with a pause between them
    await feed(pipeline, pcm)

    assert pipeline.failure is None and pipeline.finished.is_set()
    published = [e for e in log.of("published") if isinstance(e, dict)]
    finals = [e for e in published if e["type"] == "transcript" and e["isFinal"]]
    assert [f["seq"] for f in finals] == list(range(42, 42 + len(finals)))
    assert len(finals) >= 2
    # Each final's store write comes before its publication.
    for f in finals:
        assert log.calls.index(("stored", f["seq"])) < log.calls.index(("published", f))
    # Interims precede their final and carry the seq the final will have.
    interims = [e for e in published if e["type"] == "transcript" and not e["isFinal"]]
    assert interims and {i["seq"] for i in interims} <= {f["seq"] for f in finals}
    # The producer's own socket saw exactly what viewers saw.
    assert sink == published
    # All the audio was counted for the tenant and written at the end.
    assert meter.used == {"tn_1": len(pcm) // 32} and meter.flushes >= 1
    assert store.audio_ms == len(pcm) // 32


async def test_the_daily_cap_stops_the_pipeline() -> None:
    log, sink = Log(), list[ProducerEvent]()
    pipeline, _, meter = build(log, sink, cap_minutes=0)
    await feed(pipeline, read_wav("hello_en.wav"))
    assert isinstance(pipeline.failure, DailyCapReached)
    assert pipeline.failure.code == ErrorCode.DAILY_CAP_REACHED
    # It stopped at the first count (1 s), not after the whole file.
    assert meter.used["tn_1"] <= 2_000
