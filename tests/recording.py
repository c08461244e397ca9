"""A recognizer that records exactly the audio each utterance was fed, and how.

It takes every other ``feed_nowait`` and defers the rest, and every third ``feed``
waits a little, so the pipeline's two paths (the transport's task, the pipeline task)
and its queue all carry audio in the same session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from mcustt.recognizers.base import Hypothesis, Recognizer, RecognizerStream
from mcustt.types import pcm_ms


class RecordingStream(RecognizerStream):
    def __init__(self, n: int) -> None:
        self.n = n
        self.fed = bytearray()
        self.nowait = 0
        self.awaited = 0
        self._calls = 0
        self._done = asyncio.Event()

    def feed_nowait(self, pcm: bytes) -> bool:
        self._calls += 1
        if self._calls % 2:
            return False
        self.nowait += 1
        self.fed += pcm
        return True

    async def feed(self, pcm: bytes) -> None:
        self.awaited += 1
        if self.awaited % 3 == 0:
            await asyncio.sleep(0.005)  # backpressure: frames queue behind this one
        self.fed += pcm

    async def finish(self) -> None:
        self._done.set()

    async def results(self) -> AsyncIterator[Hypothesis]:
        await self._done.wait()
        yield Hypothesis(f"utterance {self.n}", True, "en-US", 0, pcm_ms(len(self.fed)))

    async def aclose(self) -> None:
        self._done.set()


#: every stream opened in this process, in order
RECORDED: list[RecordingStream] = []


class RecordingRecognizer(Recognizer):
    name = "recording"

    def open_stream(
        self,
        *,
        language: str,
        auto_detect: bool,
        language_hints: Sequence[str] = (),
        keywords: Sequence[str] = (),
    ) -> RecognizerStream:
        stream = RecordingStream(len(RECORDED) + 1)
        RECORDED.append(stream)
        return stream
