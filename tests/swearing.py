"""Plug-ins for the profanity filter and punctuation tests (issue 17), loaded by
``module:Class`` like any third party's.

``SwearingRecognizer`` speaks like pocketsphinx (lower case, no punctuation, word
timings) and swears: each utterance gives the interim ``oh shit we`` after 200 ms of
audio, then the final :data:`FINAL` with one word every 300 ms and a 600 ms pause before
the question (a sentence boundary). ``SwearySummarizer`` writes a summary with words the
transcript does not have.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

from mcustt.recognizers.base import Hypothesis, Recognizer, RecognizerStream, Word
from mcustt.summarizers.base import (
    ActionItem,
    Line,
    Summarizer,
    SummaryContent,
    SummaryResult,
)
from mcustt.types import pcm_ms
from mcustt.wire import ProfanityFilter

FINAL = "oh shit i think we need a flag do we ship on friday"
INTERIM = "oh shit we"
#: the final as each filter mode shows it (restored: case, "I", "Friday", ". ?")
SHOWN: dict[ProfanityFilter, str] = {
    "off": "Oh shit I think we need a flag. Do we ship on Friday?",
    "mask": "Oh s*** I think we need a flag. Do we ship on Friday?",
    "remove": "Oh I think we need a flag. Do we ship on Friday?",
}


def final_words() -> tuple[Word, ...]:
    out: list[Word] = []
    t = 0
    for word in FINAL.split():
        if word == "do":
            t += 600  # the pause between the two sentences
        out.append(Word(word, t, t + 250, 0.9))
        t += 300
    return tuple(out)


class SwearingStream(RecognizerStream):
    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.fed = 0
        self.queue: asyncio.Queue[Hypothesis | None] = asyncio.Queue(10)
        self.interim_sent = False

    async def feed(self, pcm: bytes) -> None:
        self.fed += len(pcm)
        if not self.interim_sent and pcm_ms(self.fed) >= 200:
            self.interim_sent = True
            await self.queue.put(Hypothesis(INTERIM, False, self.lang))

    async def finish(self) -> None:
        words = final_words()
        end = max(pcm_ms(self.fed), words[-1].end_ms)
        await self.queue.put(Hypothesis(FINAL, True, self.lang, 0, end, 0.9, words))
        await self.queue.put(None)

    async def results(self) -> AsyncIterator[Hypothesis]:
        while (item := await self.queue.get()) is not None:
            yield item

    async def aclose(self) -> None:
        return None


class SwearingRecognizer(Recognizer):
    name = "swearing"
    punctuates: ClassVar[bool] = False

    def open_stream(
        self,
        *,
        language: str,
        auto_detect: bool,
        language_hints: Sequence[str] = (),
        keywords: Sequence[str] = (),
    ) -> RecognizerStream:
        return SwearingStream(language)


class SwearySummarizer(Summarizer):
    """An LLM with a foul mouth: its summary has words no line has."""

    name = "sweary"

    async def summarize(
        self, lines: Sequence[Line], *, lang: str, prompt: str | None = None
    ) -> SummaryResult:
        return SummaryResult(
            SummaryContent(
                tldr=f"{len(lines)} lines. What a fucking mess.",
                decisions=["Ship the shit on Friday.", "bullshit"],
                action_items=[ActionItem(owner="Priya", task="Fix this crap.")],
                qa=["Is it damn ready? Yes."],
            ),
            "sweary-v1",
            lang,
        )
