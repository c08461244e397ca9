"""The session pipeline (transport-free) and the registry of live pipelines.

An ingest adapter (``/ws/stt``, WHIP, the Jitsi bridge) claims a producer slot, opens a
:class:`SessionPipeline`, pushes 16 kHz mono PCM16 chunks and finally closes it. The
pipeline runs VAD, feeds each utterance to a recognizer stream, persists each final
*before* publishing it (the store gives it the session's next gap-free seq), counts
audio against the tenant's daily cap, and reports everything through the hub (viewers)
and the adapter's sink (the producer's own socket).

A session has one pipeline per track (issue 14): the mixed producer's (no speaker), and
one per participant (its events carry ``speaker``). The tracks of a session on one node
share a :class:`SeqLine`: allocating, persisting and publishing a final happen under its
lock, so this node publishes the session's finals in seq order; a gap left by another
node's track is filled by the viewers from the store (:mod:`mcustt.fanout`).

Like websockets' Sans-I/O split, nothing here knows about sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import structlog

from mcustt import events
from mcustt.caption_health import SessionHealth, trailing_silence_ms
from mcustt.captions import Shaper
from mcustt.commits import CommitQueue
from mcustt.errors import DailyCapReached, MCUSTTError
from mcustt.fanout import Hub
from mcustt.metrics import Metrics
from mcustt.outages import StoreHealth, release_claim, renew_lease, tolerated
from mcustt.recognizers import Hypothesis, Recognizer, RecognizerError, RecognizerStream
from mcustt.sessions import SessionService
from mcustt.store.models import Session, Tenant, TranscriptLine
from mcustt.types import pcm_ms
from mcustt.vad import Audio, End, Endpointing, Segmenter, Start, VadEvent
from mcustt.wire import (
    ChannelMessage,
    ProducerEvent,
    ServerEvent,
    SessionEndEvent,
    Speaker,
    merge_keywords,
)
from mcustt.words import clamp_confidence, session_words

log = structlog.get_logger(__name__)

#: Called with each event for the producer's own socket; must not block.
Sink = Callable[[ProducerEvent], None]
#: Publishes an event on a session's channel (the hub: every viewer, every node).
Publish = Callable[[str, ChannelMessage], Awaitable[None]]


class TranscriptStore(Protocol):
    """What a pipeline writes (:class:`mcustt.store.repo.Repo` in the server)."""

    async def append_final(
        self,
        session_id: str,
        *,
        seq: int | None = None,
        text: str,
        lang: str,
        ts: int,
        start_ms: int,
        end_ms: int,
        audio_ms: int,
        speaker: str | None = None,
        words: Sequence[Mapping[str, Any]] | None = None,
        confidence: float | None = None,
        commit_key: str | None = None,
    ) -> TranscriptLine: ...

    async def set_detected_lang(self, session_id: str, lang: str) -> None: ...

    async def set_audio_ms(self, session_id: str, audio_ms: int) -> None: ...


class Meter(Protocol):
    """The node's usage meter (:class:`mcustt.usage.UsageMeter` in the server)."""

    def add(self, tenant_id: str, audio_ms: int) -> int: ...

    async def flush(self) -> None: ...


@dataclass(frozen=True)
class PipelineConfig:
    """The settings a pipeline reads (from :class:`mcustt.config.Settings`)."""

    vad_aggressiveness: int = 2
    max_utterance_ms: int = 30_000
    #: issue 15: one noise suppressor per stream, for sessions with ``reduceNoise``
    #: (``mcustt.denoise.make_suppressor``; None: this node has none)
    make_suppressor: Callable[[], Suppressor] | None = None
    #: issue 13: how long a final may wait for an unreachable database, and how many
    #: may wait (``MCUSTT_STORE_OUTAGE_MAX_S``, ``MCUSTT_STORE_OUTAGE_MAX_FINALS``)
    store_outage_max_s: float = 30.0
    store_outage_max_finals: int = 200
    #: issue 13: the node's view of the database (None: a pipeline without a server)
    store_health: StoreHealth | None = None
    #: issue 17: when a pause ends an utterance (``MCUSTT_ENDPOINT_*``; None: defaults)
    endpointing: Endpointing | None = None


class Suppressor(Protocol):
    """A stateful noise suppressor of one stream (``mcustt.denoise.NoiseSuppressor``):
    16 kHz mono PCM16 in, the same length out. CPU work: called in a thread."""

    def process(self, pcm: bytes, /) -> bytes: ...


#: audio gathered for one trip to the suppressor's thread: 100 ms (latency vs hops)
DENOISE_BATCH_BYTES = 3_200

#: an unchanged interim is sent again after this long (a heartbeat; engines repeat
#: theirs every 100-200 ms of audio), so interims come every <= 200 ms during speech.
#: Under sphinx's 100 ms batches, 90 ms lets each repeat through: at 150 ms every other
#: one was dropped and the interval's p95 was 209 ms (scripts/bench_latency.py).
INTERIM_HEARTBEAT_S = 0.09

#: audio buffered between transport and recognizer: room for a slow final (10 s)
QUEUE_BYTES = 10 * 32_000
#: audio a session counts before handing it to the node's usage meter (and checking
#: the daily cap): the cap is exact to this much per session.
COUNT_EVERY_MS = 1_000


class _Failed:
    """Queued when a frame handled in :meth:`SessionPipeline.push` hit an error: the
    pipeline task raises it, in order, as if it had handled the frame itself."""

    __slots__ = ("exc",)

    def __init__(self, exc: MCUSTTError) -> None:
        self.exc = exc


#: What the pipeline task works on: raw audio, VAD events ``push`` could not finish
#: without waiting, an error ``push`` met, or ``None`` (the end).
Item = bytes | list[VadEvent] | _Failed | None


class AudioQueue:
    """A queue bounded in bytes, not items: a frame may be 20 ms or 30 s of audio.

    One writer (the adapter) and one reader (the pipeline task). ``None`` ends it.
    """

    def __init__(self, max_bytes: int) -> None:
        self._items: deque[Item] = deque()
        self._bytes = 0
        self._max = max_bytes
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        #: the reader is asleep on an empty queue (see :meth:`idle`)
        self._reader_waiting = False

    def idle(self) -> bool:
        """Nothing queued and the reader waiting for more: whatever comes next would be
        the reader's very next item, so the writer may handle it itself."""
        return self._reader_waiting and not self._items

    async def put(self, item: Item) -> None:
        while self._bytes >= self._max:
            self._writable.clear()
            await self._writable.wait()
        self.put_nowait(item)

    def put_nowait(self, item: Item) -> None:
        self._items.append(item)
        if item.__class__ is bytes:
            self._bytes += len(item)
        self._readable.set()

    async def get(self) -> Item:
        while not self._items:
            self._readable.clear()
            self._reader_waiting = True
            try:
                await self._readable.wait()
            finally:
                self._reader_waiting = False
        item = self._items.popleft()
        if item.__class__ is bytes:
            self._bytes -= len(item)
            if self._bytes < self._max:
                self._writable.set()
        return item


class SeqLine:
    """What the tracks of one session on this node share: the lock that keeps
    allocate → persist → publish of a final in order, and the last seq seen (interims
    carry the one after it: the seq the session would give next)."""

    __slots__ = ("last", "lock")

    def __init__(self, last_seq: int) -> None:
        self.lock = asyncio.Lock()
        self.last = last_seq


#: A track of a session: (session id, participant id; None for the mixed producer).
TrackKey = tuple[str, str | None]


class SessionPipeline:
    """One track's audio → finals, on this node, for as long as its producer is here.

    Its collaborators are passed in, so a test can build one with fakes and no server.
    """

    def __init__(
        self,
        session: Session,
        tenant: Tenant,
        sink: Sink,
        *,
        recognizer: Recognizer,
        store: TranscriptStore,
        publish: Publish,
        usage: Meter,
        metrics: Metrics,
        config: PipelineConfig,
        participant: Speaker | None = None,
        seq_line: SeqLine | None = None,
        producer_id: str = "",
    ) -> None:
        self.recognizer = recognizer
        self.store = store
        self.publish = publish
        self.usage = usage
        self.metrics = metrics
        self.session_id = session.id
        self.tenant = tenant
        self.language = session.source_lang
        self.auto_detect = session.auto_detect
        #: issue 15: candidate languages, and keywords (the session's, then the tenant's)
        self.language_hints = list(session.language_hints or [])
        self.keywords = merge_keywords(session.keywords, tenant.keywords)
        #: issue 17: profanity filter, then case and punctuation for engines without
        self.shaper = Shaper(
            punctuates=recognizer.punctuates,
            language=session.source_lang,
            keywords=self.keywords,
            profanity=session.profanity_filter or "off",
        )
        #: issue 15: the session asked for noise suppression (NOISE's suppressor runs
        #: in front of VAD when it is given one)
        self.reduce_noise = bool(session.reduce_noise)
        self._suppressor: Suppressor | None = None
        self._denoise_buf = bytearray()
        if self.reduce_noise:
            if config.make_suppressor is not None:
                self._suppressor = config.make_suppressor()
            else:
                log.warning("reduceNoise asked, but this node has no noise suppressor")
        self.detected = session.detected_lang
        self.sink = sink
        #: the participant whose track this is (None: the mixed producer)
        self.participant = participant
        self.participant_id = participant["id"] if participant is not None else None
        self.producer_id = producer_id
        self.end_sent = False
        self.seq_line = seq_line if seq_line is not None else SeqLine(session.last_seq)
        #: audio received in this session, across reconnects (line offsets use it)
        self.audio_ms = session.audio_ms
        #: the segmenter counts from this pipeline's first byte; lines use session time
        self._base_ms = session.audio_ms
        self._uncounted_ms = 0
        self._queue = AudioQueue(QUEUE_BYTES)
        self._segmenter = Segmenter(
            aggressiveness=config.vad_aggressiveness,
            max_ms=config.max_utterance_ms,
            endpointing=config.endpointing,
        )
        self._stream: RecognizerStream | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._utt_start_ms = 0
        self._utt_end_wall = 0.0
        #: issue 17: this track's caption timings (metrics, the session's p50/p95)
        self.health = SessionHealth(session.id, metrics, store)
        self._last_interim: tuple[int, str] | None = None
        self._last_interim_at = 0.0
        self._runner: asyncio.Task[None] | None = None
        #: set once the pipeline stopped; ``failure`` says why if it was not asked to
        self.finished = asyncio.Event()
        self.failure: MCUSTTError | None = None
        self.log = log.bind(session_id=session.id, tenant_id=tenant.id)
        if self.participant_id is not None:
            self.log = self.log.bind(participant_id=self.participant_id)
        #: issue 13: the track's finals, stored then sent in order, through outages
        self._commits = CommitQueue(
            max_outage_s=config.store_outage_max_s,
            max_pending=config.store_outage_max_finals,
            on_fatal=self._store_failed,
            health=config.store_health,
            metrics=metrics,
            logger=self.log,
        )
        #: finals submitted and not stored yet (they take the next seqs)
        self._unstored = 0

    @property
    def key(self) -> TrackKey:
        return (self.session_id, self.participant_id)

    @property
    def next_seq(self) -> int:
        """The seq the session would give its next final (as this node knows it; the
        finals still waiting for the database take theirs first)."""
        return self.seq_line.last + 1 + self._unstored

    # -- adapter side ------------------------------------------------------------------

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name=f"pipeline-{self.session_id}")

    async def push(self, pcm: bytes) -> None:
        """Queue audio; waits when the queue is full (backpressure to the transport).

        When the pipeline task is idle, the frame is handled right here, in the
        caller's task, as far as that needs no waiting: VAD, and feeding the recognizer
        when it takes audio without waiting (every frame of a stream, with most
        engines). Waking the pipeline task for each 20 ms frame cost more than all that
        work; now it runs only for what has to wait (an utterance's start or end, an
        engine's backpressure), and it gets exactly the rest, in order.
        """
        if self.finished.is_set():
            return
        if self._suppressor is not None:
            # transport → noise suppressor → VAD → recognizer (issue 15)
            self._denoise_buf += pcm
            if len(self._denoise_buf) < DENOISE_BATCH_BYTES:
                return
            pcm = await self._denoise()
            if self.finished.is_set() or not pcm:
                return
        await self._push_pcm(pcm)

    async def _push_pcm(self, pcm: bytes) -> None:
        queue = self._queue
        if not queue.idle():
            await queue.put(pcm)
            return
        evs = self._segmenter.feed(pcm)
        stream = self._stream
        try:
            for i, ev in enumerate(evs):
                if isinstance(ev, Audio):
                    if stream is None or not ev.pcm:
                        continue  # (as _feed does)
                    try:
                        if stream.feed_nowait(ev.pcm):
                            continue
                    except RecognizerError as exc:
                        self._engine_failed(exc)
                        continue
                queue.put_nowait(evs[i:])
                break
            self._count(pcm_ms(pcm))
        except MCUSTTError as exc:  # a fatal engine error, or the daily cap
            queue.put_nowait(_Failed(exc))

    def _count(self, ms: int) -> None:
        """Session time, and the tenant's usage (checked against the daily cap)."""
        self.audio_ms += ms
        self._uncounted_ms += ms
        if self._uncounted_ms >= COUNT_EVERY_MS:
            self._bill()

    async def _denoise(self) -> bytes:
        """The gathered audio, noise suppressed off the event loop.

        Raises:
            RecognizerError: the suppressor failed (the stream ends with an error frame
                rather than going on unsuppressed while the session says otherwise).
        """
        assert self._suppressor is not None
        batch = bytes(self._denoise_buf)
        self._denoise_buf.clear()
        try:
            return await asyncio.to_thread(self._suppressor.process, batch)
        except Exception as exc:
            self.log.exception("noise suppressor failed")
            raise RecognizerError(f"noise suppression failed: {exc}") from exc

    async def close(self) -> None:
        """Finish: the open utterance is finalized and persisted, then the task ends."""
        if self._suppressor is not None and self._denoise_buf and not self.finished.is_set():
            # the last < 100 ms still waiting for the suppressor
            with contextlib.suppress(MCUSTTError):
                tail = await self._denoise()
                if tail:
                    await self._push_pcm(tail)
        if self._runner is None or self._runner.done():
            self.finished.set()
            return
        await self._queue.put(None)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._runner)

    async def drain(self, reason: MCUSTTError) -> None:
        """The node is draining (issue 13): finalize now (the open utterance's final
        persisted and published, as :meth:`close`), and stop with ``reason`` as the
        failure, so the transport tells its producer why and closes its socket."""
        if self.failure is None:
            # Set before the task ends: the transport wakes on ``finished`` and reads it.
            self.failure = reason
        await self.close()

    def renamed(self, speaker: object) -> None:
        """A ``speaker`` event's speaker: if it is this track's, its events carry the new
        name from now on."""
        if (
            self.participant is not None
            and isinstance(speaker, dict)
            and speaker.get("id") == self.participant_id
            and isinstance(speaker.get("name"), str)
        ):
            self.participant = events.speaker(self.participant["id"], speaker["name"])

    def end(self, event: SessionEndEvent) -> None:
        """Tell the producer the session ended, once (this node's end, or another
        node's seen on the channel)."""
        if not self.end_sent:
            self.end_sent = True
            self.sink(event)

    async def abort(self) -> None:
        """Stop at once (shutdown of a stuck engine); unfinalized speech is lost."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        await self._drop_stream()
        await self._commits.aclose()
        self.finished.set()

    def _store_failed(self, exc: MCUSTTError) -> None:
        """The commit queue gave up (issue 13): the task stops with ``exc``, in order."""
        self._queue.put_nowait(_Failed(exc))

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    for ev in self._segmenter.flush():
                        await self._vad_event(ev)
                    break
                if item.__class__ is bytes:
                    for ev in self._segmenter.feed(item):
                        await self._vad_event(ev)
                    self._count(pcm_ms(item))
                elif item.__class__ is list:
                    for ev in item:
                        await self._vad_event(ev)
                else:
                    raise cast(_Failed, item).exc
            await self._end_utterance()
            self._bill()
            with tolerated("usage", self._commits.health):  # the node's meter writes it later
                await self.usage.flush()
            # issue 13: after the finals still waiting for the database (if it is down)
            audio_ms = self.audio_ms
            self._commits.submit(lambda: self.store.set_audio_ms(self.session_id, audio_ms))
            await self._commits.drain()
        except MCUSTTError as exc:
            self.failure = exc
            self.log.warning("pipeline stopped", code=exc.code, reason=exc.message)
            await self._drop_stream()
            with contextlib.suppress(MCUSTTError):
                await self._commits.drain()  # finals recognized before the failure
            with contextlib.suppress(Exception):
                self._bill()
            with contextlib.suppress(Exception):
                await self.usage.flush()
        except Exception as exc:
            self.failure = RecognizerError(f"pipeline failed: {exc}")
            self.log.exception("pipeline crashed")
            await self._drop_stream()
        finally:
            try:
                await self.health.aclose()  # its last figures (bounded), its task ended
            finally:
                self.finished.set()

    async def _vad_event(self, ev: Start | Audio | End) -> None:
        if isinstance(ev, Start):
            await self._end_utterance()  # defensive: one stream at a time
            self._utt_start_ms = self._base_ms + ev.at_ms
            self.health.speech_started()
            self._stream = self.recognizer.open_stream(
                language=self.language,
                auto_detect=self.auto_detect,
                language_hints=self.language_hints,
                keywords=self.keywords,
            )
            stream = self._stream
            self._consumer = asyncio.create_task(
                self._consume(stream, self._utt_start_ms), name=f"results-{self.session_id}"
            )
            await self._feed(ev.preroll)
        elif isinstance(ev, Audio):
            await self._feed(ev.pcm)
        else:
            self._utt_end_wall = time.monotonic()
            self.health.speech_ended(trailing_silence_ms(self._segmenter))
            await self._end_utterance()

    async def _feed(self, pcm: bytes) -> None:
        if self._stream is None or not pcm:
            return
        try:
            await self._stream.feed(pcm)
        except RecognizerError as exc:
            self._engine_failed(exc)

    async def _end_utterance(self) -> None:
        stream, consumer = self._stream, self._consumer
        if stream is None:
            return
        self._stream, self._consumer = None, None
        try:
            await stream.finish()
            if consumer is not None:
                await consumer
        except RecognizerError as exc:
            self._engine_failed(exc)
        finally:
            await stream.aclose()

    async def _drop_stream(self) -> None:
        stream, consumer = self._stream, self._consumer
        self._stream, self._consumer = None, None
        if consumer is not None:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await consumer
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.aclose()

    def _engine_failed(self, exc: RecognizerError) -> None:
        if exc.fatal:
            raise exc
        self.log.warning("utterance dropped after a recognizer error", error=exc.message)

    async def _consume(self, stream: RecognizerStream, utt_start_ms: int) -> None:
        async for hyp in stream.results():
            await self._hypothesis(hyp, utt_start_ms)

    async def _hypothesis(self, hyp: Hypothesis, utt_start_ms: int) -> None:
        # issue 17: interims and finals shaped once, before anyone sees or stores them
        hyp = self.shaper.shape(hyp)
        text = " ".join(hyp.text.split())
        lang = hyp.lang or self.language
        if hyp.lang and hyp.lang != self.detected:
            self.detected = detected = hyp.lang
            # issue 13: in order with the finals, retried through a database outage
            self._commits.submit(lambda: self.store.set_detected_lang(self.session_id, detected))
            # A session with a fixed language asked for no detection: no event for it.
            if self.auto_detect:
                await self._emit(events.language(hyp.lang))
        if not text:
            return
        now_ms = int(time.time() * 1000)
        if not hyp.is_final:
            # Engines repeat unchanged interims to show liveness: passed on only as a
            # heartbeat, so viewers get one at least every ~200 ms while speech goes on
            # (issue 17), not every repeat.
            now = time.monotonic()
            if (
                self._last_interim == (self.next_seq, text)
                and now - self._last_interim_at < INTERIM_HEARTBEAT_S
            ):
                return
            self._last_interim = (self.next_seq, text)
            self._last_interim_at = now
            self.health.interim()
            await self._emit(
                events.transcript(
                    seq=self.next_seq,
                    text=text,
                    is_final=False,
                    lang=lang,
                    ts=now_ms,
                    speaker=self.participant,
                )
            )
            return
        self.health.final()
        start = utt_start_ms + (hyp.start_ms or 0)
        end = utt_start_ms + hyp.end_ms if hyp.end_ms is not None else self.audio_ms
        end = max(end, start)
        # issue 17: the engine's words in session time, inside [start, end]
        timings = session_words(hyp.words, utt_start_ms, start, end)
        confidence = clamp_confidence(hyp.confidence)
        line = self.seq_line
        audio_ms = self.audio_ms
        # The same key on every attempt: a retry after a lost answer finds the line.
        commit_key = uuid.uuid4().hex

        async def commit() -> None:
            # One final of the session at a time on this node, from allocation to publish:
            # viewers get this node's finals in seq order.
            async with line.lock:
                # Persist first: a final anyone has seen can always be replayed. The store
                # allocates the seq (shared with the session's other tracks, on any node).
                persisted = await self.store.append_final(
                    self.session_id,
                    text=text,
                    lang=lang,
                    ts=now_ms,
                    start_ms=start,
                    end_ms=end,
                    audio_ms=audio_ms,
                    speaker=self.participant_id,
                    words=timings,
                    confidence=confidence,
                    commit_key=commit_key,
                )
                seq = persisted.seq
                line.last = max(line.last, seq)
                self._unstored -= 1
                self.metrics.finals.inc()
                if self._utt_end_wall:
                    self.metrics.final_latency.observe(time.monotonic() - self._utt_end_wall)
                await self._emit(
                    events.timed(
                        events.transcript(
                            seq=seq,
                            text=text,
                            is_final=True,
                            lang=lang,
                            ts=now_ms,
                            speaker=self.participant,
                        ),
                        start_ms=start,
                        end_ms=end,
                        confidence=confidence,
                        words=timings,
                    )
                )

        # issue 13: stored, then sent, by the track's commit queue, which retries while
        # the database is unreachable: then recognition goes on meanwhile.
        self._unstored += 1
        self._commits.submit(commit)
        await self._commits.settled()

    async def _emit(self, event: ServerEvent) -> None:
        self.sink(event)
        try:
            await self.publish(self.session_id, event)
        except Exception as exc:
            # Viewers catch up from the store on reconnect; the producer already has it.
            self.log.warning("publish failed", error=str(exc))

    def _bill(self) -> None:
        ms, self._uncounted_ms = self._uncounted_ms, 0
        if ms <= 0:
            return
        self.metrics.audio_seconds.inc(ms / 1000)
        total = self.usage.add(self.tenant.id, ms)
        if total >= self.tenant.daily_minutes_cap * 60_000:
            raise DailyCapReached(
                f"the tenant's daily audio cap of {self.tenant.daily_minutes_cap} minutes "
                "is reached; the session has ended"
            )


class PipelineRegistry:
    """The pipelines whose producer is connected to this node: one per track, keyed
    (session id, participant id or None for the mixed producer).

    It owns each pipeline's lease keeper and the tasks that end sessions on another
    node's request, and cancels them in :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        sessions: SessionService,
        hub: Hub,
        recognizer: Recognizer,
        store: TranscriptStore,
        usage: Meter,
        metrics: Metrics,
        config: PipelineConfig,
        on_ended: Callable[[Session], Awaitable[object]],
    ) -> None:
        self.sessions = sessions
        self.hub = hub
        self.recognizer = recognizer
        self.store = store
        self.usage = usage
        self.metrics = metrics
        self.config = config
        #: called once for each session this node ended (queues its summary)
        self.on_ended = on_ended
        self._live: dict[TrackKey, SessionPipeline] = {}
        self._keepers: dict[TrackKey, asyncio.Task[None]] = {}
        #: per session with a track here: the order of its finals on this node
        self._lines: dict[str, SeqLine] = {}
        self._enders: set[asyncio.Task[None]] = set()
        #: sessions this node is finalizing on another node's stop (one task each)
        self._stopping: set[str] = set()

    def get(self, session_id: str, participant_id: str | None = None) -> SessionPipeline | None:
        return self._live.get((session_id, participant_id))

    def tracks(self, session_id: str) -> list[SessionPipeline]:
        """The session's pipelines on this node (mixed and participants)."""
        return [p for key, p in self._live.items() if key[0] == session_id]

    def __len__(self) -> int:
        return len(self._live)

    def live(self) -> list[SessionPipeline]:
        """Every pipeline on this node (a drain finalizes them all: issue 13)."""
        return list(self._live.values())

    async def open(
        self,
        session: Session,
        tenant: Tenant,
        producer_id: str,
        sink: Sink,
        *,
        participant: Speaker | None = None,
    ) -> SessionPipeline:
        """Start a pipeline for a track whose producer claim this node holds
        (``participant``: that participant's track; None: the mixed producer)."""
        line = self._lines.get(session.id)
        if line is None:
            line = self._lines[session.id] = SeqLine(session.last_seq)
        else:
            line.last = max(line.last, session.last_seq)
        pipeline = SessionPipeline(
            session,
            tenant,
            sink,
            recognizer=self.recognizer,
            store=self.store,
            publish=self.hub.publish,
            usage=self.usage,
            metrics=self.metrics,
            config=self.config,
            participant=participant,
            seq_line=line,
            producer_id=producer_id,
        )
        key = pipeline.key
        self._live[key] = pipeline
        pipeline.start()
        self._keepers[key] = asyncio.create_task(
            self._keep(key, producer_id), name=f"lease-{session.id}"
        )
        self.metrics.producers.set(len(self._live))
        return pipeline

    async def release(self, pipeline: SessionPipeline, producer_id: str) -> None:
        """The producer left: finalize, persist, give up the claim (session stays live)."""
        await pipeline.close()
        await self._forget(pipeline.key, producer_id)

    async def _forget(self, key: TrackKey, producer_id: str) -> None:
        keeper = self._keepers.pop(key, None)
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        self._live.pop(key, None)
        session_id, participant_id = key
        if not self.tracks(session_id):
            self._lines.pop(session_id, None)
        self.metrics.producers.set(len(self._live))
        # issue 13: during a database outage, released once it is back
        await release_claim(
            self.config.store_health,
            lambda: self.sessions.release_producer(session_id, producer_id, participant_id),
            session_id=session_id,
        )

    async def _keep(self, key: TrackKey, producer_id: str) -> None:
        """Renew the track's lease, and obey a stop published by another node."""
        session_id, participant_id = key
        viewer = await self.hub.join(session_id)
        # Jittered renewals: leases of streams started together spread out. A deadline,
        # not a timeout per item: the session's events must not postpone it.
        due = time.monotonic() + random.uniform(7.0, 13.0)
        try:
            while True:
                if time.monotonic() >= due:
                    # issue 13: a renewal the database could not take is tried again
                    # every second, so the lease is renewed as soon as it is back.
                    renewed = await renew_lease(
                        self.config.store_health,
                        lambda: self.sessions.renew_producer(
                            session_id, producer_id, participant_id
                        ),
                    )
                    due = time.monotonic() + (random.uniform(7.0, 13.0) if renewed else 1.0)
                with contextlib.suppress(TimeoutError):
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
                    # cancel that lands as the queue yields an item (session-end does,
                    # just as the track is released), and the keeper never stopped.
                    async with asyncio.timeout(max(0.0, due - time.monotonic())):
                        item = await viewer.queue.get()
                    if isinstance(item, events.Event) and item.type == "_stop":
                        if key in self._live and session_id not in self._stopping:
                            # Not awaited here: finalizing the pipelines ends this
                            # keeper (it is cancelled by _forget).
                            self._spawn_stop(session_id)
                    elif isinstance(item, events.Event) and item.type == "speaker":
                        # Renamed (PUT .../speakers/:id, any node): later events of the
                        # track carry the new name.
                        pipeline = self._live.get(key)
                        if pipeline is not None:
                            pipeline.renamed(item.data.get("speaker"))
                    elif isinstance(item, events.Event) and item.type == "session-end":
                        # Ended by another node: this track's producer is told too.
                        pipeline = self._live.get(key)
                        if pipeline is not None:
                            pipeline.end(cast(SessionEndEvent, item.data))
        finally:
            await self.hub.leave(viewer)

    def _spawn_stop(self, session_id: str) -> None:
        self._stopping.add(session_id)
        task = asyncio.create_task(self._stop_local(session_id), name=f"end-{session_id}")
        self._enders.add(task)
        task.add_done_callback(self._enders.discard)

    async def _stop_local(self, session_id: str) -> None:
        """Another node is ending the session: finalize this node's tracks (their last
        finals persisted and published) and give up their claims, which tells that node
        it may end the session now."""
        try:
            pipelines = self.tracks(session_id)
            await asyncio.gather(*(p.close() for p in pipelines), return_exceptions=True)
            for p in pipelines:
                await release_claim(
                    self.config.store_health,
                    functools.partial(
                        self.sessions.release_producer, session_id, p.producer_id, p.participant_id
                    ),
                    session_id=session_id,
                )
        finally:
            self._stopping.discard(session_id)

    async def _remote_producers(self, session: Session, local: set[str]) -> bool:
        """Whether a producer of the session (mixed or track) is connected to another
        node (``local``: the producer ids on this node)."""
        fresh = await self.sessions.get(session.id)
        if fresh is None or fresh.status == "ended":
            return False
        if await self.sessions.producer_connected(fresh) and fresh.producer_id not in local:
            return True
        tracks = await self.sessions.repo.connected_tracks(session.id)
        return any(t.producer_id not in local for t in tracks)

    async def end_session(self, session: Session, *, reason: str) -> None:
        """End a session (idempotent): finalize every track wherever it runs, persist,
        mark it ended, tell everyone, queue its summary."""
        pipelines = self.tracks(session.id)
        local = {p.producer_id for p in pipelines}
        await asyncio.gather(*(p.close() for p in pipelines))
        if await self._remote_producers(session, local):
            # Producers on other nodes: ask them to finalize first, so their last finals
            # precede session-end (they give up their claims when done); take over if
            # they do not answer in time.
            await self.hub.publish(session.id, events.stop(reason))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if not await self._remote_producers(session, local):
                    break
                await asyncio.sleep(0.1)
        if await self.sessions.mark_ended(session.id, reason):
            log.info("session ended", session_id=session.id, reason=reason)
            end = events.session_end(reason)
            for pipeline in pipelines:
                pipeline.end(end)
            with contextlib.suppress(Exception):
                await self.hub.publish(session.id, end)
            await self.on_ended(session)

    async def aclose(self) -> None:
        """Shutdown: finalize every local pipeline (bounded wait), release claims, then
        stop whatever is still ending a session for another node."""
        for key, pipeline in list(self._live.items()):
            try:
                # asyncio.timeout, not wait_for (its lost cancel on Python 3.11)
                async with asyncio.timeout(10):
                    await pipeline.close()
            except TimeoutError:
                await pipeline.abort()
            await self._forget(key, pipeline.producer_id)
        for task in list(self._enders):
            task.cancel()
        for task in list(self._enders):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
