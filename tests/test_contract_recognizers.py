"""The recognizer contract (:mod:`mcustt.testing.recognizer`) for every shipped recognizer:
``null``, ``sphinx`` (real pocketsphinx workers) and ``google`` (against the local fake)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import grpc
import pytest
from conftest import read_wav
from fakes.google_speech import FakeSpeech

from mcustt.config import Settings
from mcustt.recognizers import Recognizer, load_recognizer
from mcustt.recognizers.google import GoogleRecognizer
from mcustt.recognizers.sphinx import SphinxRecognizer
from mcustt.testing.recognizer import Failure, RecognizerContract, Speech

pytestmark = pytest.mark.timeout(120)


class TestNullRecognizer(RecognizerContract):
    @pytest.fixture
    async def recognizer(self) -> AsyncIterator[Recognizer]:
        recognizer = load_recognizer(Settings(recognizer="null"))
        await recognizer.start()
        yield recognizer
        await recognizer.aclose()

    @pytest.fixture
    def speech(self) -> Speech:
        # It recognizes nothing, by design.
        return Speech(read_wav("hello_en.wav"), words=(), interims=False)


class TestSphinxRecognizer(RecognizerContract):
    @pytest.fixture
    async def recognizer(self) -> AsyncIterator[Recognizer]:
        recognizer = load_recognizer(Settings(recognizer="sphinx", recognizer_workers=1))
        await recognizer.start()
        yield recognizer
        await recognizer.aclose()

    @pytest.fixture
    def speech(self) -> Speech:
        # A word pocketsphinx gets right in hello_en on every run (it is weak on the rest).
        return Speech(read_wav("hello_en.wav"), words=("weekly",))

    @pytest.fixture
    def failure(self, recognizer: Recognizer) -> Failure:
        assert isinstance(recognizer, SphinxRecognizer)

        async def kill_the_workers() -> None:
            for stats in await recognizer.stats():
                os.kill(stats["pid"], signal.SIGKILL)

        # A worker that dies takes its utterances with it: fatal, like any lost engine.
        return Failure(fatal=True, trigger=kill_the_workers)

    async def assert_released(self, recognizer: Recognizer) -> None:
        assert isinstance(recognizer, SphinxRecognizer)
        stats = await recognizer.stats()
        assert all(s["active"] == 0 and s["idle"] == s["created"] for s in stats), stats


class TestGoogleRecognizer(RecognizerContract):
    fake: FakeSpeech

    @pytest.fixture
    async def recognizer(self) -> AsyncIterator[Recognizer]:
        async with FakeSpeech() as fake:
            self.fake = fake
            channel = grpc.aio.insecure_channel(fake.address)
            settings = Settings(recognizer="google", google_project="test-project")
            recognizer = GoogleRecognizer.for_channel(
                settings, channel, retry_initial_delay_s=0.01, retry_max_delay_s=0.05
            )
            await recognizer.start()
            yield recognizer
            await recognizer.aclose()
            await channel.close()

    @pytest.fixture
    def speech(self, recognizer: Recognizer) -> Speech:
        script = self.fake.script("hello world how are you / fine thanks and you")
        return Speech(script.pcm, words=tuple(script.words), exact=True)

    @pytest.fixture(params=["unavailable", "invalid-argument"])
    def failure(self, request: pytest.FixtureRequest, recognizer: Recognizer) -> Failure:
        if request.param == "unavailable":
            # Every call fails: retried, then given up on for this utterance only.
            self.fake.fail_stream(None, grpc.StatusCode.UNAVAILABLE, after_audio_requests=1)
            return Failure(fatal=False)
        self.fake.fail_stream(1, grpc.StatusCode.INVALID_ARGUMENT, after_audio_requests=1)
        return Failure(fatal=True)

    async def assert_released(self, recognizer: Recognizer) -> None:
        # The call of the closed stream is cancelled (or was over already).
        async with asyncio.timeout(5):
            while not all(s.cancelled or s.status is not None for s in self.fake.streams):
                await asyncio.sleep(0.01)
        assert self.fake.streams, "the stream had opened a call"
