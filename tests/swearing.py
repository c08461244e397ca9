"""Plug-ins for the profanity filter and punctuation tests (issue 17), loaded by
``module:Class`` like any third party's.

``SwearingRecognizer`` speaks like pocketsphinx (lower case, no punctuation, word
timings) and swears: each utterance gives the interim ``oh shit we`` after 200 ms of
audio, then the final :data:`FINAL` with one word every 300 ms and a 600 ms pause before
the question (a sentence boundary). ``SwearySummarizer`` writes a summary with words the
transcript does not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from scripted import ScriptedRecognizer, ScriptedStream

from mcustt.recognizers.base import Hypothesis, Word
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


class SwearingStream(ScriptedStream):
    """:class:`ScriptedStream`'s shape, with a sphinx-like sweary interim and final."""

    def interim(self) -> Hypothesis:
        return Hypothesis(INTERIM, False, self.lang)

    def final(self) -> Hypothesis:
        words = final_words()
        end = max(pcm_ms(self.fed), words[-1].end_ms)
        return Hypothesis(FINAL, True, self.lang, 0, end, 0.9, words)


class SwearingRecognizer(ScriptedRecognizer):
    name = "swearing"
    punctuates: ClassVar[bool] = False
    stream_class = SwearingStream


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
