"""Caption health (issue 17): how fast captions come, per node and per session.

Four stages, each a Prometheus histogram of the node (:class:`mcustt.metrics.Metrics`):

* end of speech → final made (``mcustt_caption_final_seconds``): from the VAD's end of
  the utterance minus the trailing silence it waited for (its hangover), to the moment
  the pipeline has the engine's final (the final's ``ts``);
* final made → delivered (``mcustt_caption_delivery_seconds``): from the final's ``ts``
  to the completion of its send on a live viewer's WebSocket or SSE stream, on whichever
  node the viewer is (``ts`` is wall-clock milliseconds, so it works across nodes; no
  field is added to the wire). It covers persisting, the broker and the fan-out;
  replays (``lastSeq``) are not counted, they are not live delivery;
* speech start → first interim (``mcustt_caption_first_interim_seconds``);
* between interims of an utterance (``mcustt_caption_interim_interval_seconds``).

:class:`SessionHealth` is one pipeline's part: it observes the three pipeline stages,
keeps a bounded sample of each (the last :data:`SAMPLE` values), and writes the
session's p50/p95 on its row at most every :data:`FLUSH_EVERY_S` seconds, from one
owned task and never in the pipeline's path, so any node's session state
(``GET /api/sessions/:id``, ``latency``) reports them. :class:`Delivery` is the
fan-out's part.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import structlog

from mcustt import wire
from mcustt.metrics import Metrics

log = structlog.get_logger(__name__)

#: observations kept per stage for a session's percentiles (bounded memory)
SAMPLE = 200
#: a session's figures are written at most this often (never a write per frame or final)
FLUSH_EVERY_S = 5.0
#: how long closing a pipeline waits for its last figures to be written
CLOSE_FLUSH_S = 2.0
#: the VAD's frame (``mcustt.vad.FRAME_MS``; not imported: the VAD may change freely)
_FRAME_MS = 20


@runtime_checkable
class LatencyStore(Protocol):
    """Where a session's figures go (:class:`mcustt.store.repo.Repo`); a pipeline's
    store without it (a test's fake) simply keeps them in memory."""

    async def set_caption_latency(self, session_id: str, latency: dict[str, Any]) -> None: ...


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def trailing_silence_ms(segmenter: object) -> int:
    """The silence the VAD waited through before ending the utterance it just ended.

    Read from the segmenter's silent-frame run (unchanged until the next utterance
    starts); a segmenter without one counts as none, which only makes the figure
    smaller than the truth, never negative."""
    ms = getattr(segmenter, "trailing_silence_ms", None)
    if isinstance(ms, int):
        return max(0, ms)
    run = getattr(segmenter, "_silent_run", 0)
    return max(0, run * _FRAME_MS) if isinstance(run, int) else 0


class SessionHealth:
    """One pipeline's caption timings: histograms, a bounded sample, the session row.

    The pipeline calls :meth:`speech_started`, :meth:`speech_ended`, :meth:`interim`
    and :meth:`final` at those moments (all synchronous and cheap), and :meth:`aclose`
    when it stops.
    """

    def __init__(self, session_id: str, metrics: Metrics, store: object) -> None:
        self.session_id = session_id
        self.metrics = metrics
        self.store = store if isinstance(store, LatencyStore) else None
        self.finals: deque[float] = deque(maxlen=SAMPLE)
        self.first_interims: deque[float] = deque(maxlen=SAMPLE)
        self.intervals: deque[float] = deque(maxlen=SAMPLE)
        self.count = 0
        #: monotonic instants of the current utterance (None: not in one / already seen)
        self._speech_start: float | None = None
        self._speech_end: float | None = None
        self._last_interim: float | None = None
        self._dirty = False
        self._flushed_at = 0.0
        self._writer: asyncio.Task[None] | None = None
        #: after :meth:`aclose` no write task is started (a late result must not leak one)
        self._closed = False

    # -- pipeline hooks -----------------------------------------------------------------

    def speech_started(self) -> None:
        self._speech_start = time.monotonic()
        self._speech_end = None
        self._last_interim = None

    def speech_ended(self, trailing_silence_ms: int) -> None:
        self._speech_end = time.monotonic() - trailing_silence_ms / 1000

    def interim(self) -> None:
        now = time.monotonic()
        if self._speech_start is not None:
            took = now - self._speech_start
            self._speech_start = None  # only the utterance's first
            self.metrics.caption_first_interim.observe(took)
            self.first_interims.append(took)
        elif self._last_interim is not None:
            gap = now - self._last_interim
            self.metrics.caption_interim_interval.observe(gap)
            self.intervals.append(gap)
        self._last_interim = now
        self._touch()

    def final(self) -> None:
        """The engine's final is in the pipeline's hands (its ``ts`` is now). A final
        made before the VAD ended the utterance (an engine's own endpoint) has no end of
        speech to measure from: it is not observed."""
        now = time.monotonic()
        self._speech_start = None
        self._last_interim = None
        if self._speech_end is None:
            return
        took = max(0.0, now - self._speech_end)
        self._speech_end = None
        self.metrics.caption_final.observe(took)
        self.finals.append(took)
        self.count += 1
        self._touch()

    # -- the session's figures ----------------------------------------------------------

    def figures(self) -> wire.CaptionLatency:
        return {
            "finalP50Ms": _ms(percentile(self.finals, 50)),
            "finalP95Ms": _ms(percentile(self.finals, 95)),
            "firstInterimP50Ms": _ms(percentile(self.first_interims, 50)),
            "firstInterimP95Ms": _ms(percentile(self.first_interims, 95)),
            "interimIntervalP50Ms": _ms(percentile(self.intervals, 50)),
            "interimIntervalP95Ms": _ms(percentile(self.intervals, 95)),
            "finals": len(self.finals),
            "updatedAt": round(time.time(), 3),
        }

    def _touch(self) -> None:
        self._dirty = True
        if self._closed or self.store is None:
            return
        if self._writer is not None and not self._writer.done():
            return  # the write under way (or due) takes the latest figures
        delay = max(0.0, self._flushed_at + FLUSH_EVERY_S - time.monotonic())
        self._writer = asyncio.create_task(
            self._write_later(delay), name=f"latency-{self.session_id}"
        )

    async def _write_later(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        await self._write()

    async def _write(self) -> None:
        """Write the current figures (one write at a time; a failure is logged and
        retried with the next observation: the figures are advisory, captions never
        wait for them)."""
        assert self.store is not None
        self._flushed_at = time.monotonic()
        self._dirty = False
        try:
            await self.store.set_caption_latency(self.session_id, dict(self.figures()))
        except Exception as exc:
            self._dirty = True
            log.warning("caption latency not stored", session_id=self.session_id, error=str(exc))

    async def aclose(self) -> None:
        """The pipeline stopped: drop a pending write, then write the latest figures if
        they changed since the last one, bounded in time."""
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self._dirty = True  # the cancelled write may not have happened
        if self._dirty and self.store is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_FLUSH_S):
                    await self._write()


def stored_latency(raw: dict[str, Any] | None) -> wire.CaptionLatency | None:
    """A session row's figures as the session state reports them (None: none yet, or a
    row written by a version with other fields)."""
    if not isinstance(raw, dict):
        return None
    try:
        return {
            "finalP50Ms": _opt_int(raw.get("finalP50Ms")),
            "finalP95Ms": _opt_int(raw.get("finalP95Ms")),
            "firstInterimP50Ms": _opt_int(raw.get("firstInterimP50Ms")),
            "firstInterimP95Ms": _opt_int(raw.get("firstInterimP95Ms")),
            "interimIntervalP50Ms": _opt_int(raw.get("interimIntervalP50Ms")),
            "interimIntervalP95Ms": _opt_int(raw.get("interimIntervalP95Ms")),
            "finals": int(raw.get("finals") or 0),
            "updatedAt": float(raw.get("updatedAt") or 0.0),
        }
    except (TypeError, ValueError):
        return None


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    return int(value)


class Delivery:
    """The fan-out's part: a final's send completed on a live viewer (see
    :mod:`mcustt.fanout`). One per node; children per transport resolved once."""

    __slots__ = ("_sse", "_ws")

    def __init__(self, metrics: Metrics) -> None:
        self._ws = metrics.caption_delivery.labels("ws")
        self._sse = metrics.caption_delivery.labels("sse")

    def delivered(self, ts_ms: object, *, sse: bool) -> None:
        """``ts_ms``: the final's ``ts`` (wall-clock ms when it was made, on any node)."""
        if not isinstance(ts_ms, int):
            return
        took = max(0.0, time.time() - ts_ms / 1000)
        (self._sse if sse else self._ws).observe(took)
