"""The recognizer seam's contract, as a test suite any implementation can run against itself.

Subclass :class:`RecognizerContract` in a test module (the subclass's name starts with
``Test``) and provide two fixtures: ``recognizer``, a *started* recognizer (closed
afterwards), and ``speech``, audio it recognizes with the words it must find::

    from mcustt.testing.recognizer import RecognizerContract, Speech

    class TestMyRecognizer(RecognizerContract):
        @pytest.fixture
        async def recognizer(self) -> AsyncIterator[Recognizer]:
            rec = MyRecognizer(Settings(...))
            await rec.start()
            yield rec
            await rec.aclose()

        @pytest.fixture
        def speech(self) -> Speech:
            return Speech(pcm=load("hello.wav"), words=("hello",))

Optionally a ``failure`` fixture (a :class:`Failure`: how to make the engine fail, and
whether that is fatal) and :meth:`RecognizerContract.assert_released` (check that the
engine holds nothing for closed streams).

What is asserted is what :mod:`mcustt.recognizers.base` documents and the session
pipeline relies on: a started recognizer passes ``check`` and may be closed twice; a
stream fed an utterance and finished yields its hypotheses in order, interims before
the final that closes them, offsets inside the audio fed, and then ends; ``feed_nowait``
takes all of a piece (``True``) or none of it (``False``, then ``await feed``); an
utterance without audio gives no final; ``aclose`` may be called twice, ends
``results()`` without an error and leaves the engine ready for the next utterance;
failures are :class:`RecognizerError` with ``fatal`` as the implementation declares, and
a failed stream refuses more audio.

:func:`recognize` is the driver of one utterance that the suite (and any recognizer
test) uses.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Final

import pytest

from mcustt.recognizers.base import Hypothesis, Recognizer, RecognizerError, RecognizerStream
from mcustt.types import BYTES_PER_MS

__all__ = ["FRAME_BYTES", "Failure", "RecognizerContract", "Speech", "recognize"]

#: What the session pipeline feeds per call: 20 ms, a client's WebSocket frame.
FRAME_BYTES: Final = 20 * BYTES_PER_MS
#: How long an utterance's results may take to end after finish() or aclose().
RESULTS_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True)
class Speech:
    """Audio an implementation recognizes, and what it must make of it.

    Attributes:
        pcm: one utterance (PCM16 LE, 16 kHz, mono), as the pipeline's VAD would cut it.
        words: words the finals must contain, in this order (compared without case or
            surrounding punctuation); empty: the engine yields no final for this audio.
        exact: the finals hold exactly ``words``, no other (a deterministic engine).
        interims: at least one interim comes before the first final.
        language: the stream's language (``open_stream(language=..., auto_detect=False)``).
    """

    pcm: bytes
    words: tuple[str, ...]
    exact: bool = False
    interims: bool = True
    language: str = "en-US"


@dataclass(frozen=True)
class Failure:
    """An engine failure an implementation can cause, and how it must be reported.

    Attributes:
        fatal: the ``RecognizerError.fatal`` that results() (and feed(), if it raises)
            must report.
        trigger: causes the failure; called once the first half of the speech was fed.
            None when the fixture already arranged it (e.g. a fault in a fake server).
    """

    fatal: bool
    trigger: Callable[[], Awaitable[None]] | None = None


async def recognize(
    recognizer: Recognizer,
    pcm: bytes,
    *,
    frame: int = FRAME_BYTES,
    pace_s: float = 0.0,
    language: str = "en-US",
    auto_detect: bool = False,
    nowait: bool = False,
    timeout_s: float = RESULTS_TIMEOUT_S,
) -> list[Hypothesis]:
    """Run one utterance as the session pipeline does and return every hypothesis.

    Opens a stream, consumes ``results()`` in a task while feeding ``pcm`` in pieces of
    ``frame`` bytes (``pace_s`` apart; 0: as fast as backpressure allows), then finishes
    it, waits up to ``timeout_s`` for the results to end, and closes the stream.

    With ``nowait``, each piece is offered to ``feed_nowait()`` first and awaited with
    ``feed()`` only when refused, as the pipeline does for audio it handles in the
    transport's task.

    Raises:
        RecognizerError: from ``feed()`` or ``results()``.
    """
    stream = recognizer.open_stream(language=language, auto_detect=auto_detect)
    hypotheses: list[Hypothesis] = []
    consumer = asyncio.create_task(_collect(stream, hypotheses))
    try:
        for piece in _pieces(pcm, frame):
            if not (nowait and stream.feed_nowait(piece)):
                await stream.feed(piece)
            if pace_s:
                await asyncio.sleep(pace_s)
        await stream.finish()
        await asyncio.wait_for(consumer, timeout_s)
    finally:
        await _cancel(consumer)
        await stream.aclose()
    return hypotheses


class RecognizerContract:
    """What every :class:`Recognizer` must do; see the module docstring for its use."""

    pytestmark = [pytest.mark.asyncio]

    # -- what an implementation provides -------------------------------------------------

    @pytest.fixture
    def recognizer(self) -> Recognizer:
        """A started recognizer, closed after the test (it may be closed already)."""
        raise NotImplementedError("a RecognizerContract provides the 'recognizer' fixture")

    @pytest.fixture
    def speech(self) -> Speech:
        """An utterance the recognizer recognizes (or declares it yields nothing for)."""
        raise NotImplementedError("a RecognizerContract provides the 'speech' fixture")

    @pytest.fixture
    def failure(self) -> Failure | None:
        """A failure the implementation can cause; None skips the failure test."""
        return None

    async def assert_released(self, recognizer: Recognizer) -> None:
        """Assert that the engine holds nothing for streams that were closed (decoders,
        calls). Called after a stream was closed mid-utterance; checks nothing here."""

    # -- the recognizer's lifecycle ------------------------------------------------------

    async def test_started_recognizer_passes_check(self, recognizer: Recognizer) -> None:
        assert isinstance(recognizer, Recognizer)
        assert isinstance(recognizer.name, str) and recognizer.name
        assert isinstance(recognizer.model, str) and recognizer.model
        await recognizer.check()

    async def test_aclose_is_idempotent(self, recognizer: Recognizer) -> None:
        await recognizer.aclose()
        await recognizer.aclose()

    # -- one utterance -------------------------------------------------------------------

    async def test_utterance_gives_interims_then_finals(
        self, recognizer: Recognizer, speech: Speech
    ) -> None:
        hypotheses = await recognize(recognizer, speech.pcm, language=speech.language)
        check_utterance(hypotheses, speech)

    async def test_feed_nowait_takes_a_piece_whole_or_not_at_all(
        self, recognizer: Recognizer, speech: Speech
    ) -> None:
        # Audio taken twice or lost shows in the words or in offsets beyond the audio.
        hypotheses = await recognize(recognizer, speech.pcm, language=speech.language, nowait=True)
        check_utterance(hypotheses, speech)

    async def test_utterance_without_audio_gives_no_final(
        self, recognizer: Recognizer, speech: Speech
    ) -> None:
        hypotheses = await recognize(recognizer, b"", language=speech.language)
        assert [h for h in hypotheses if h.is_final] == []

    async def test_stream_aclose_is_idempotent_after_finish(
        self, recognizer: Recognizer, speech: Speech
    ) -> None:
        stream = recognizer.open_stream(language=speech.language, auto_detect=False)
        hypotheses: list[Hypothesis] = []
        consumer = asyncio.create_task(_collect(stream, hypotheses))
        try:
            for piece in _pieces(speech.pcm, FRAME_BYTES):
                await stream.feed(piece)
            await stream.finish()
            await asyncio.wait_for(consumer, RESULTS_TIMEOUT_S)
        finally:
            await _cancel(consumer)
            await stream.aclose()
        await stream.aclose()
        check_utterance(hypotheses, speech)

    async def test_aclose_mid_utterance_ends_results_and_frees_the_engine(
        self, recognizer: Recognizer, speech: Speech
    ) -> None:
        stream = recognizer.open_stream(language=speech.language, auto_detect=False)
        heard = asyncio.Event()
        consumer = asyncio.create_task(_collect(stream, [], heard))
        try:
            for piece in _pieces(_first_half(speech.pcm), FRAME_BYTES):
                await stream.feed(piece)
            if speech.interims:
                # The engine is at work on this utterance (a decoder, a call) when closed.
                await asyncio.wait_for(heard.wait(), RESULTS_TIMEOUT_S)
            await stream.aclose()
            await stream.aclose()
            # Pending results are discarded: results() ends, and raises nothing.
            await asyncio.wait_for(consumer, RESULTS_TIMEOUT_S)
            async with asyncio.timeout(RESULTS_TIMEOUT_S):
                assert [h async for h in stream.results()] == []
        finally:
            await _cancel(consumer)
            await stream.aclose()
        await self.assert_released(recognizer)
        # Whatever the closed stream held is free for the next utterance.
        check_utterance(await recognize(recognizer, speech.pcm, language=speech.language), speech)

    # -- failures ------------------------------------------------------------------------

    async def test_engine_failure_is_a_recognizer_error(
        self, recognizer: Recognizer, speech: Speech, failure: Failure | None
    ) -> None:
        if failure is None:
            pytest.skip("the implementation declares no failure it can cause")
        stream = recognizer.open_stream(language=speech.language, auto_detect=False)
        consumer = asyncio.create_task(_collect(stream, []))
        try:
            fed_error: RecognizerError | None = None
            try:
                for piece in _pieces(_first_half(speech.pcm), FRAME_BYTES):
                    await stream.feed(piece)
                if failure.trigger is not None:
                    await failure.trigger()
                for piece in _pieces(speech.pcm[len(_first_half(speech.pcm)) :], FRAME_BYTES):
                    await stream.feed(piece)
            except RecognizerError as exc:
                fed_error = exc
            # finish() documents no error: it runs in cleanup paths.
            await asyncio.wait_for(stream.finish(), RESULTS_TIMEOUT_S)
            with pytest.raises(RecognizerError) as caught:
                await asyncio.wait_for(consumer, RESULTS_TIMEOUT_S)
            assert caught.value.fatal is failure.fatal, caught.value
            if fed_error is not None:
                assert fed_error.fatal is failure.fatal, fed_error
            # A failed stream refuses more audio.
            with pytest.raises(RecognizerError):
                await stream.feed(b"\x00\x00")
        finally:
            await _cancel(consumer)
            await stream.aclose()


def check_utterance(hypotheses: list[Hypothesis], speech: Speech) -> None:
    """What the hypotheses of one finished utterance of ``speech`` must satisfy."""
    assert all(isinstance(h, Hypothesis) for h in hypotheses), hypotheses
    finals = [h for h in hypotheses if h.is_final]
    if not speech.words:
        assert finals == [], hypotheses
        return
    assert finals, f"no final for {speech.words}: {hypotheses}"
    heard = [_word(w) for h in finals for w in h.text.split()]
    expected = [_word(w) for w in speech.words]
    if speech.exact:
        assert heard == expected, (heard, expected)
    else:
        assert _in_order(expected, heard), (heard, expected)
    assert hypotheses[-1].is_final, f"an interim after the last final: {hypotheses}"
    if speech.interims:
        first = hypotheses.index(finals[0])
        assert any(not h.is_final for h in hypotheses[:first]), hypotheses
    assert all(h.lang in (None, speech.language) for h in finals), finals
    # Offsets count from the first byte fed to the stream.
    duration_ms = len(speech.pcm) // BYTES_PER_MS
    for h in hypotheses:
        for offset in (h.start_ms, h.end_ms):
            assert offset is None or 0 <= offset <= duration_ms, (h, duration_ms)
        if h.start_ms is not None and h.end_ms is not None:
            assert h.start_ms <= h.end_ms, h
    ends = [h.end_ms for h in finals if h.end_ms is not None]
    assert ends == sorted(ends), finals
    # Word timings (issue 17), when an engine gives them: the final's words, in order,
    # on the stream's timeline; interims carry none.
    for h in finals:
        if h.words is None:
            continue
        assert [w.text for w in h.words] == h.text.split(), h
        starts = [w.start_ms for w in h.words]
        assert starts == sorted(starts), h
        assert all(0 <= w.start_ms <= w.end_ms <= duration_ms for w in h.words), h
        assert all(w.confidence is None or 0 <= w.confidence <= 1 for w in h.words), h


async def _collect(
    stream: RecognizerStream, into: list[Hypothesis], heard: asyncio.Event | None = None
) -> None:
    """Consume results() into ``into``; ``heard`` is set at the first hypothesis or end."""
    try:
        async for hypothesis in stream.results():
            into.append(hypothesis)
            if heard is not None:
                heard.set()
    finally:
        if heard is not None:
            heard.set()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _pieces(pcm: bytes, frame: int) -> Iterator[bytes]:
    for start in range(0, len(pcm), frame):
        yield pcm[start : start + frame]


def _first_half(pcm: bytes) -> bytes:
    return pcm[: len(pcm) // 2 & ~1]  # whole samples


def _word(word: str) -> str:
    return word.strip(string.punctuation).lower()


def _in_order(expected: list[str], heard: list[str]) -> bool:
    rest = iter(heard)
    return all(word in rest for word in expected)
