"""One utterance on the sphinx pool: batching audio, collecting hypotheses.

A stream is pinned to a worker at its first batch of audio (so streams that never get
any cost nothing), ships audio in ``BATCH_BYTES`` batches within the worker's flow
control bound, and turns the worker's replies into :class:`Hypothesis` objects.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Final

import structlog

from mcustt.recognizers.base import Hypothesis, RecognizerError, RecognizerStream
from mcustt.recognizers.sphinx.pool import Worker, WorkerPool
from mcustt.recognizers.sphinx.worker import LANG
from mcustt.types import BYTES_PER_MS

log = structlog.get_logger(__name__)

#: Audio is shipped in batches of this size: each batch gives one interim, so interims
#: come every 200 ms of audio, comfortably inside the 300 ms promise.
BATCH_BYTES: Final = 200 * BYTES_PER_MS
#: Interims a slow consumer may leave unread; older ones are dropped (a later interim
#: replaces them anyway). Finals and errors are kept outside this bound.
MAX_QUEUED_INTERIMS: Final = 32


class SphinxStream(RecognizerStream):
    def __init__(self, pool: WorkerPool, uid: int) -> None:
        self._pool = pool
        self._uid = uid
        self._worker: Worker | None = None
        self._buf = bytearray()
        self._fed_bytes = 0
        self._acked_bytes = 0
        self._interims: deque[Hypothesis] = deque(maxlen=MAX_QUEUED_INTERIMS)
        self._final: Hypothesis | None = None
        self._error: RecognizerError | None = None
        self._finishing = False
        self._done = False
        self._closed = False
        self._wake = asyncio.Event()

    async def feed(self, pcm: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._finishing or self._closed:
            raise RuntimeError("feed() after finish() or aclose()")
        self._buf += pcm
        self._fed_bytes += len(pcm)
        while len(self._buf) >= BATCH_BYTES:
            batch = bytes(self._buf[:BATCH_BYTES])
            del self._buf[:BATCH_BYTES]
            await self._ship(batch)

    def feed_nowait(self, pcm: bytes) -> bool:
        if self._error is not None:
            raise self._error
        if self._finishing or self._closed:
            return False  # feed() raises
        size = len(self._buf) + len(pcm)
        if size < BATCH_BYTES:
            self._buf += pcm
            self._fed_bytes += len(pcm)
            return True
        # A batch would ship: without waiting only to a live worker already pinned, with
        # room in its pipe for the one batch.
        worker = self._worker
        if (
            worker is None
            or not worker.alive
            or size >= 2 * BATCH_BYTES
            or not worker.has_room(BATCH_BYTES)
        ):
            return False
        self._buf += pcm
        self._fed_bytes += len(pcm)
        batch = bytes(self._buf[:BATCH_BYTES])
        del self._buf[:BATCH_BYTES]
        self._pool.audio(worker, self._uid, batch)
        return True

    async def finish(self) -> None:
        if self._finishing or self._closed:
            return
        self._finishing = True
        try:
            if self._error is not None:
                return
            if self._fed_bytes == 0:
                self._mark_done()
                return
            rest = bytes(self._buf[: len(self._buf) & ~1])  # whole samples only
            self._buf.clear()
            if rest:
                await self._ship(rest)
            worker = await self._pinned()
            if self._error is None:
                self._pool.end(worker, self._uid)
        except RecognizerError as exc:
            # results() reports it; finish() often runs in cleanup paths that must not raise.
            self.on_fail(exc)

    async def results(self) -> AsyncIterator[Hypothesis]:
        while True:
            if self._closed:
                return
            if self._error is not None:
                raise self._error
            if self._interims:
                yield self._interims.popleft()
                continue
            if self._done:
                final, self._final = self._final, None
                if final is not None:
                    yield final
                return
            self._wake.clear()
            await self._wake.wait()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._pool.abort(self._worker, self._uid, self)
        self._interims.clear()
        self._final = None
        self._wake.set()

    # ------------------------------------------------- replies, from the pool

    def on_ack(self, nbytes: int, text: str | None, error: str | None) -> None:
        self._acked_bytes += nbytes
        if error is not None:
            self._fail_decode(error)
        elif text and not self._done:
            # Unchanged text is sent again on purpose: it is the heartbeat that keeps
            # interims within 300 ms of audio of each other while speech goes on.
            # end_ms: how far decoding got, so callers can tell interim cadence in audio time.
            self._interims.append(
                Hypothesis(
                    text=text,
                    is_final=False,
                    lang=LANG,
                    start_ms=0,
                    end_ms=self._acked_bytes // BYTES_PER_MS,
                )
            )
            self._wake.set()

    def on_final(self, text: str | None, error: str | None) -> None:
        if error is not None:
            self._fail_decode(error)
            return
        if text:
            self._final = Hypothesis(
                text=text,
                is_final=True,
                lang=LANG,
                start_ms=0,
                end_ms=self._fed_bytes // BYTES_PER_MS,
            )
        self._mark_done()

    def on_fail(self, error: RecognizerError) -> None:
        if self._error is None and not self._done:
            self._error = error
        self._mark_done()

    # -------------------------------------------------------------- internals

    async def _pinned(self) -> Worker:
        if self._worker is None:
            worker = await self._pool.acquire()
            if self._closed:
                raise RecognizerError("stream closed", fatal=False)
            self._worker = worker
            self._pool.begin(worker, self._uid, self)
        return self._worker

    async def _ship(self, pcm: bytes) -> None:
        worker = await self._pinned()
        await worker.wait_for_room(len(pcm))
        if self._error is not None:
            raise self._error
        if self._closed:
            return
        self._pool.audio(worker, self._uid, pcm)

    def _fail_decode(self, error: str) -> None:
        # One utterance went wrong inside a healthy worker: the session may go on.
        log.error("sphinx_decode_failed", uid=self._uid, error=error)
        worker = self._worker
        if worker is not None:
            worker.utterances.pop(self._uid, None)
        self.on_fail(RecognizerError(f"sphinx could not decode: {error}", fatal=False))

    def _mark_done(self) -> None:
        self._done = True
        self._wake.set()
