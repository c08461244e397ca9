"""The text-to-speech contract (mcustt.testing.tts) run against every engine mcustt
ships: espeak (espeak-ng, installed by scripts/install), and openai against the local
fake OpenAI server.

Both are built through ``load_synthesizer``, as the app builds them.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import need_service
from fakes.openai_server import FakeOpenAI, Reply, running_fake_openai

from mcustt.config import Settings
from mcustt.summarizers.openai import RetryPolicy
from mcustt.testing.tts import SENTENCE, SynthesizerContract, assert_speech
from mcustt.tts import Synthesizer, TTSError, load_synthesizer
from mcustt.tts.espeak import EspeakSynthesizer
from mcustt.tts.openai import OpenAISynthesizer

NO_WAIT = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05, jitter=0)


async def _built(settings: Settings, kind: type[Synthesizer]) -> AsyncIterator[Synthesizer]:
    synthesizer = load_synthesizer(settings)
    assert isinstance(synthesizer, kind)
    yield synthesizer
    await synthesizer.aclose()


class TestEspeakSynthesizer(SynthesizerContract):
    @pytest.fixture
    async def synthesizer(self) -> AsyncIterator[Synthesizer]:
        if shutil.which("espeak-ng") is None:
            need_service("espeak-ng", "scripts/install installs the Debian package")
        async for synthesizer in _built(Settings(tts="espeak"), EspeakSynthesizer):
            yield synthesizer

    @pytest.fixture
    async def unavailable_synthesizer(self) -> AsyncIterator[Synthesizer]:
        synthesizer = EspeakSynthesizer(Settings(), program="/nonexistent/espeak-ng")
        yield synthesizer
        await synthesizer.aclose()

    @pytest.fixture
    async def failing_synthesizer(self) -> AsyncIterator[Synthesizer]:
        # A program that exits non-zero whatever it is asked.
        synthesizer = EspeakSynthesizer(Settings(), program="false")
        yield synthesizer
        await synthesizer.aclose()

    async def test_languages_speak_with_their_own_voice(self, synthesizer: Synthesizer) -> None:
        voices = await synthesizer.voices()
        assert {"en", "en-us", "de", "es", "fr-fr"} <= set(voices)
        assert_speech(await synthesizer.synthesize("Guten Morgen, wie geht es?", voice="de"))


class TestOpenAISynthesizer(SynthesizerContract):
    @pytest.fixture
    async def fake(self) -> AsyncIterator[FakeOpenAI]:
        async with running_fake_openai() as fake:
            yield fake

    def settings(self, fake: FakeOpenAI, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "tts": "openai",
            "openai_api_key": "sk-test-123",
            "openai_base_url": fake.base_url,
            "openai_timeout_s": 5.0,
            **overrides,
        }
        return Settings(**values)

    @pytest.fixture
    async def synthesizer(self, fake: FakeOpenAI) -> AsyncIterator[Synthesizer]:
        async for synthesizer in _built(self.settings(fake), OpenAISynthesizer):
            yield synthesizer

    @pytest.fixture
    async def unavailable_synthesizer(self) -> AsyncIterator[Synthesizer]:
        async for synthesizer in _built(Settings(tts="openai"), OpenAISynthesizer):
            yield synthesizer

    @pytest.fixture
    async def failing_synthesizer(self, fake: FakeOpenAI) -> AsyncIterator[Synthesizer]:
        # A permanent refusal: no retries to sit through.
        fake.speech_script.extend([Reply.fail(401, "Incorrect API key provided")] * 3)
        async for synthesizer in _built(self.settings(fake), OpenAISynthesizer):
            yield synthesizer

    async def test_the_request_is_the_speech_endpoints(
        self, fake: FakeOpenAI, synthesizer: Synthesizer
    ) -> None:
        audio = await synthesizer.synthesize(SENTENCE, voice="Nova")
        assert_speech(audio)
        [request] = fake.speech_requests
        assert request.body == {
            "model": "gpt-4o-mini-tts",
            "input": SENTENCE,
            "voice": "nova",
            "response_format": "opus",
        }
        assert request.headers["authorization"] == "Bearer sk-test-123"
        assert fake.requests == []  # no chat completion on the way

    async def test_transient_failures_are_retried(self, fake: FakeOpenAI) -> None:
        fake.speech_script.extend(
            [Reply.rate_limited(0), Reply.fail(503, "overloaded")]  # then the tone
        )
        synthesizer = OpenAISynthesizer(self.settings(fake), retry=NO_WAIT)
        try:
            assert_speech(await synthesizer.synthesize(SENTENCE))
        finally:
            await synthesizer.aclose()
        assert len(fake.speech_requests) == 3

    async def test_retries_are_bounded(self, fake: FakeOpenAI) -> None:
        fake.speech_script.extend([Reply.fail(500, "boom")] * 3)
        synthesizer = OpenAISynthesizer(self.settings(fake), retry=NO_WAIT)
        try:
            with pytest.raises(TTSError, match="after 3 attempts"):
                await synthesizer.synthesize(SENTENCE)
        finally:
            await synthesizer.aclose()
        assert len(fake.speech_requests) == 3

    async def test_a_reply_that_is_not_ogg_opus_is_an_error(self, fake: FakeOpenAI) -> None:
        fake.speech_script.append(Reply.text("ID3 this is an mp3"))
        synthesizer = OpenAISynthesizer(self.settings(fake), retry=NO_WAIT)
        try:
            with pytest.raises(TTSError, match="not OGG/Opus"):
                await synthesizer.synthesize(SENTENCE)
        finally:
            await synthesizer.aclose()

    async def test_a_voice_the_model_refuses_is_an_error(self, fake: FakeOpenAI) -> None:
        # A custom default voice is offered; the real endpoint's 400 is reported as such.
        synthesizer = OpenAISynthesizer(self.settings(fake, tts_voice="robot"), retry=NO_WAIT)
        try:
            with pytest.raises(TTSError, match=r"HTTP 400.*Invalid value: 'robot'"):
                await synthesizer.synthesize(SENTENCE)
        finally:
            await synthesizer.aclose()
        assert len(fake.speech_requests) == 1
