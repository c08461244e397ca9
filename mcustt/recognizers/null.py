"""A recognizer that recognizes nothing: for measuring the pipeline's own cost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from mcustt.recognizers.base import Hypothesis, Recognizer, RecognizerStream


class NullStream(RecognizerStream):
    def __init__(self) -> None:
        self._done = asyncio.Event()

    async def feed(self, pcm: bytes) -> None:
        return None

    def feed_nowait(self, pcm: bytes) -> bool:
        return True

    async def finish(self) -> None:
        self._done.set()

    async def results(self) -> AsyncIterator[Hypothesis]:
        await self._done.wait()
        return
        yield  # pragma: no cover - makes this an async generator

    async def aclose(self) -> None:
        self._done.set()


class NullRecognizer(Recognizer):
    name = "null"

    def open_stream(
        self,
        *,
        language: str,
        auto_detect: bool,
        language_hints: Sequence[str] = (),
        keywords: Sequence[str] = (),
    ) -> RecognizerStream:
        return NullStream()
