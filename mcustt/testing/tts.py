"""The text-to-speech seam's contract, as a test suite any engine can run against itself.

Subclass :class:`SynthesizerContract` in a test module (the subclass's name starts with
``Test``) and provide three fixtures, each yielding a :class:`Synthesizer`:

* ``synthesizer``: configured and ready (and whatever it talks to, running);
* ``unavailable_synthesizer``: what the settings give when the engine cannot run at
  all (its program missing, its key unset);
* ``failing_synthesizer``: configured, but its program or service fails every request.

What is asserted is what :mod:`mcustt.tts.base` documents and :mod:`mcustt.speech`
relies on: real OGG/Opus bytes (a player's decoder finds an Opus stream with audio in
it), the default voice among :meth:`~Synthesizer.voices`, voices resolved without
regard to case, an unknown voice refused as :class:`UnknownVoice` (400) naming the
voices, the event loop kept running, concurrent calls on one instance, ``aclose``
callable twice, and failures raised as :class:`TTSError` (502) or
:class:`TTSUnavailable` (503) with a message.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import av
import pytest

from mcustt.tts.base import Synthesizer, TTSError, TTSUnavailable, UnknownVoice
from mcustt.tts.opus import is_ogg_opus
from mcustt.wire import ErrorCode

__all__ = ["Decoded", "SynthesizerContract", "decode_ogg_opus"]

SENTENCE = "The billing page ships on Friday."


@dataclass(frozen=True)
class Decoded:
    codec: str
    seconds: float
    #: root mean square of the samples, 0..1 full scale: 0 is silence
    rms: float


def decode_ogg_opus(data: bytes) -> Decoded:
    """Decode the file as a player would (PyAV): its codec, length and loudness."""
    with av.open(io.BytesIO(data), "r", format="ogg") as container:
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        total = 0
        energy = 0.0
        rate = 0
        # Plain Python over s16 mono samples: numpy is not a dependency.
        resampler = av.AudioResampler(format="s16", layout="mono")
        for frame in container.decode(stream):
            rate = frame.sample_rate
            for mono in resampler.resample(frame):
                values = memoryview(bytes(mono.planes[0])[: mono.samples * 2]).cast("h")
                total += len(values)
                energy += sum(v * v for v in values)
    seconds = total / rate if rate else 0.0
    rms = (energy / total) ** 0.5 / 32768 if total else 0.0
    return Decoded(codec=codec, seconds=seconds, rms=rms)


def assert_speech(data: bytes, *, min_seconds: float = 0.2) -> Decoded:
    assert isinstance(data, bytes)
    assert is_ogg_opus(data), data[:64]
    decoded = decode_ogg_opus(data)
    assert decoded.codec == "opus", decoded
    assert decoded.seconds >= min_seconds, decoded
    assert decoded.rms > 0.001, f"silent: {decoded}"
    return decoded


class SynthesizerContract:
    """What every text-to-speech engine promises (see the module docstring)."""

    @pytest.fixture
    async def synthesizer(self) -> AsyncIterator[Synthesizer]:
        raise NotImplementedError("provide a synthesizer fixture: a configured, ready engine")
        yield  # pragma: no cover - makes this an async generator like the overrides

    @pytest.fixture
    async def unavailable_synthesizer(self) -> AsyncIterator[Synthesizer]:
        raise NotImplementedError(
            "provide an unavailable_synthesizer fixture: the engine without its program or key"
        )
        yield  # pragma: no cover

    @pytest.fixture
    async def failing_synthesizer(self) -> AsyncIterator[Synthesizer]:
        raise NotImplementedError(
            "provide a failing_synthesizer fixture: one whose program or service fails"
        )
        yield  # pragma: no cover

    async def test_has_a_name_and_a_default_voice_among_its_voices(
        self, synthesizer: Synthesizer
    ) -> None:
        assert isinstance(type(synthesizer).name, str) and type(synthesizer).name
        await synthesizer.check()
        voices = list(await synthesizer.voices())
        assert voices and all(isinstance(v, str) and v for v in voices)
        assert len(set(voices)) == len(voices), "voices are listed once"
        assert synthesizer.default_voice in voices

    async def test_text_becomes_ogg_opus_speech(self, synthesizer: Synthesizer) -> None:
        assert_speech(await synthesizer.synthesize(SENTENCE))

    async def test_every_voice_given_is_accepted_in_any_case(
        self, synthesizer: Synthesizer
    ) -> None:
        voices = list(await synthesizer.voices())
        other = voices[-1]
        assert await synthesizer.resolve_voice(other.upper()) == other
        assert await synthesizer.resolve_voice(None) == synthesizer.default_voice
        assert_speech(await synthesizer.synthesize(SENTENCE, voice=other.upper()))

    async def test_an_unknown_voice_is_a_400_naming_the_voices(
        self, synthesizer: Synthesizer
    ) -> None:
        with pytest.raises(UnknownVoice) as info:
            await synthesizer.synthesize(SENTENCE, voice="no-such-voice")
        assert info.value.status_code == 400
        assert info.value.code == ErrorCode.UNKNOWN_VOICE
        assert synthesizer.default_voice in info.value.message

    async def test_text_that_looks_like_options_is_spoken(self, synthesizer: Synthesizer) -> None:
        # Never a command line: "--help" and friends are words to say.
        assert_speech(await synthesizer.synthesize("--help -v xx; rm -rf / $(reboot)"))

    async def test_the_event_loop_keeps_running(self, synthesizer: Synthesizer) -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            await asyncio.sleep(0)
            before = ticks
            data = await synthesizer.synthesize(SENTENCE * 20)
            during = ticks - before
        finally:
            task.cancel()
        assert_speech(data)
        assert during >= 1, "the event loop stalled while synthesizing"

    async def test_concurrent_calls_on_one_instance(self, synthesizer: Synthesizer) -> None:
        results = await asyncio.gather(
            *(synthesizer.synthesize(f"{SENTENCE} Number {i}.") for i in range(4))
        )
        for data in results:
            assert_speech(data)

    async def test_aclose_can_be_called_twice(self, synthesizer: Synthesizer) -> None:
        await synthesizer.synthesize(SENTENCE)
        await synthesizer.aclose()
        await synthesizer.aclose()

    async def test_unavailable_is_a_503(self, unavailable_synthesizer: Synthesizer) -> None:
        with pytest.raises(TTSUnavailable) as info:
            await unavailable_synthesizer.check()
        assert info.value.status_code == 503
        assert info.value.code == ErrorCode.TTS_UNAVAILABLE
        assert info.value.message.strip()
        with pytest.raises(TTSUnavailable):
            await unavailable_synthesizer.synthesize(SENTENCE)
        await unavailable_synthesizer.aclose()

    async def test_a_failing_engine_is_a_502(self, failing_synthesizer: Synthesizer) -> None:
        with pytest.raises(TTSError) as info:
            await failing_synthesizer.synthesize(SENTENCE)
        assert info.value.status_code == 502
        assert info.value.code == ErrorCode.TTS_FAILED
        assert info.value.message.strip()
        await failing_synthesizer.aclose()
