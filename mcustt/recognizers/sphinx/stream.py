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

from mcustt.recognizers.base import Hypothesis, RecognizerError, RecognizerStream, Word
from mcustt.recognizers.sphinx.pool import Worker, WorkerPool
from mcustt.recognizers.sphinx.worker import LANG
from mcustt.types import BYTES_PER_MS

log = structlog.get_logger(__name__)

#: Audio is shipped in batches of this size: each batch gives one interim, so interims
#: come every 100 ms of audio while the words change (issue 17: the first within 300 ms
#: of speech, then every <= 200 ms), and at the end of an utterance at most this much
#: audio is left to decode before its final.
BATCH_BYTES: Final = 100 * BYTES_PER_MS
#: Until the first words are out, batches are half as long: pocketsphinx shows a word
#: only once it ends, and the first interim then waits 25 ms less on average.
FIRST_BATCH_BYTES: Final = 50 * BYTES_PER_MS
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
        self._worded = False  # the worker has shown words (see FIRST_BATCH_BYTES)

    async def feed(self, pcm: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._finishing or self._closed:
            raise RuntimeError("feed() after finish() or aclose()")
        self._buf += pcm
        self._fed_bytes += len(pcm)
        while len(self._buf) >= (size := self._batch_bytes()):
            batch = bytes(self._buf[:size])
            del self._buf[:size]
            await self._ship(batch)

    def feed_nowait(self, pcm: bytes) -> bool:
        if self._error is not None:
            raise self._error
        if self._finishing or self._closed:
            return False  # feed() raises
        size = len(self._buf) + len(pcm)
        batch_bytes = self._batch_bytes()
        if size < batch_bytes:
            self._buf += pcm
            self._fed_bytes += len(pcm)
            return True
        # A batch would ship: without waiting only to a live worker already pinned, with
        # room in its pipe for the one batch.
        worker = self._worker
        if (
            worker is None
            or not worker.alive
            or size >= 2 * batch_bytes
            or not worker.has_room(batch_bytes)
        ):
            return False
        self._buf += pcm
        self._fed_bytes += len(pcm)
        batch = bytes(self._buf[:batch_bytes])
        del self._buf[:batch_bytes]
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
            self._worded = True
            # Unchanged text is sent again on purpose: it is the heartbeat that keeps
            # interims within a batch (100 ms) of audio of each other while speech goes
            # on (the pipeline passes repeats on at most every ~150 ms).
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

    def on_final(
        self, text: str | None, error: str | None, words: tuple[tuple[str, int, int], ...] = ()
    ) -> None:
        if error is not None:
            self._fail_decode(error)
            return
        if text:
            end_ms = self._fed_bytes // BYTES_PER_MS
            self._final = Hypothesis(
                text=text,
                is_final=True,
                lang=LANG,
                start_ms=0,
                end_ms=end_ms,
                # issue 17: the decoder's segmentation. No confidence, per word or per
                # final: a posterior needs the lattice pass that is off for speed
                # (worker.DECODER_OPTIONS), and its acoustic scores are no probability.
                words=tuple(
                    Word(word, min(start, end_ms), min(end, end_ms)) for word, start, end in words
                )
                or None,
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

    def _batch_bytes(self) -> int:
        return BATCH_BYTES if self._worded else FIRST_BATCH_BYTES

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
