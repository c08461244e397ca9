"""A deterministic recognizer for pipeline tests (real speech tests use sphinx).

Each utterance yields an interim after its first 200 ms of audio, then one final
"utterance N" whose offsets cover exactly the audio it was fed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence

from mcustt.recognizers.base import Hypothesis, Recognizer, RecognizerStream
from mcustt.types import pcm_ms

_counter = itertools.count(1)


class ScriptedStream(RecognizerStream):
    def __init__(self, lang: str) -> None:
        self.n = next(_counter)
        self.lang = lang
        self.fed = 0
        self.queue: asyncio.Queue[Hypothesis | None] = asyncio.Queue(100)
        self.interim_sent = False

    async def feed(self, pcm: bytes) -> None:
        self.fed += len(pcm)
        if not self.interim_sent and pcm_ms(self.fed) >= 200:
            self.interim_sent = True
            await self.queue.put(self.interim())

    async def finish(self) -> None:
        await self.queue.put(self.final())
        await self.queue.put(None)

    def interim(self) -> Hypothesis:
        return Hypothesis(f"utterance {self.n}", False, self.lang)

    def final(self) -> Hypothesis:
        return Hypothesis(f"utterance {self.n}", True, self.lang, 0, pcm_ms(self.fed))

    async def results(self) -> AsyncIterator[Hypothesis]:
        while (item := await self.queue.get()) is not None:
            yield item

    async def aclose(self) -> None:
        return None


class ScriptedRecognizer(Recognizer):
    name = "scripted"
    #: the stream each utterance gets (subclasses speak other lines)
    stream_class: type[ScriptedStream] = ScriptedStream

    def open_stream(
        self,
        *,
        language: str,
        auto_detect: bool,
        language_hints: Sequence[str] = (),
        keywords: Sequence[str] = (),
    ) -> RecognizerStream:
        return self.stream_class(language)
