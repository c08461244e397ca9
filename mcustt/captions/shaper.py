"""What a session's captions look like before anyone sees them (issue 17).

:class:`Shaper` rewrites each :class:`~mcustt.recognizers.Hypothesis` of a track, interim
or final, once, at the top of the pipeline's result handling (so the producer, viewers,
the store, replay and every export see the same text): the profanity filter first (a
removed word must not be left to start or end a sentence), then, for engines that do
not punctuate (``Recognizer.punctuates`` false: pocketsphinx), sentence case and end
marks (:mod:`mcustt.captions.punctuation`). ``text`` and each ``words[i].text`` change
together: the same tokens in the same order, except the ones ``remove`` drops with
their timings.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from mcustt.captions.profanity import Filter, word_list
from mcustt.captions.punctuation import Restorer
from mcustt.recognizers.base import Hypothesis, Word
from mcustt.summarizers.base import ActionItem, SummaryContent
from mcustt.wire import ProfanityFilter


class Shaper:
    """One track's shaping: the engine's habits, the session's keywords and filter."""

    def __init__(
        self,
        *,
        punctuates: bool,
        language: str,
        keywords: Sequence[str] = (),
        profanity: ProfanityFilter = "off",
    ) -> None:
        self.language = language
        self.filter = Filter(profanity, keywords)
        self.restorer = None if punctuates else Restorer(keywords)
        if self.filter.active:
            word_list()  # read the list now, not while the first caption waits

    @property
    def active(self) -> bool:
        return self.filter.active or self.restorer is not None

    def shape(self, hyp: Hypothesis) -> Hypothesis:
        """``hyp`` with its text (and words) filtered, recased and punctuated."""
        if not self.active:
            return hyp
        lang = hyp.lang or self.language
        tokens = hyp.text.split()
        words = hyp.words
        if words is not None and len(words) == len(tokens):
            # one list of tokens, so text and words cannot disagree
            shaped = self._tokens(tokens, _gaps(words), final=hyp.is_final, lang=lang)
            kept_words = tuple(
                dataclasses.replace(w, text=t)
                for w, t in zip(words, shaped, strict=True)
                if t is not None
            )
            text = " ".join(t for t in shaped if t is not None)
            return dataclasses.replace(hyp, text=text, words=kept_words)
        # the engine's text and words differ (or there are no words): each on its own
        text = " ".join(
            t for t in self._tokens(tokens, None, final=hyp.is_final, lang=lang) if t is not None
        )
        new_words: tuple[Word, ...] | None = None
        if words is not None:
            shaped = self._tokens(
                [w.text for w in words], _gaps(words), final=hyp.is_final, lang=lang
            )
            new_words = tuple(
                dataclasses.replace(w, text=t)
                for w, t in zip(words, shaped, strict=True)
                if t is not None
            )
        return dataclasses.replace(hyp, text=text, words=new_words)

    def _tokens(
        self, tokens: Sequence[str], gaps: list[int | None] | None, *, final: bool, lang: str
    ) -> list[str | None]:
        filtered = self.filter.apply(tokens)
        if self.restorer is None:
            return filtered
        kept = [i for i, t in enumerate(filtered) if t is not None]
        kept_gaps: list[int | None] | None = None
        if gaps is not None:
            # the pause between two kept words spans any removed between them: the
            # longest silence in that stretch, not the removed word's duration
            kept_gaps = []
            for a, b in itertools.pairwise(kept):
                stretch = [g for g in gaps[a:b] if g is not None]
                kept_gaps.append(max(stretch) if stretch else None)
        restored = self.restorer.restore(
            [t for t in filtered if t is not None], kept_gaps, final=final, lang=lang
        )
        out: list[str | None] = [None] * len(tokens)
        for i, token in zip(kept, restored, strict=True):
            out[i] = token
        return out

    def summary(self, content: SummaryContent) -> SummaryContent:
        """A summary with the session's profanity filter applied to every field (an
        LLM may write a word the transcript no longer has)."""
        return filter_summary(content, self.filter)


def _gaps(words: Sequence[Word]) -> list[int | None]:
    return [max(0, b.start_ms - a.end_ms) for a, b in itertools.pairwise(words)]


def filter_summary(content: SummaryContent, flt: Filter) -> SummaryContent:
    """``content`` with ``flt`` applied to the tldr, decisions, action items (task and
    owner) and Q&A; items left empty by ``remove`` are dropped."""
    if not flt.active:
        return content

    def many(items: Sequence[str]) -> list[str]:
        return [t for t in (flt.text(i).strip() for i in items) if t]

    actions = []
    for item in content.action_items:
        task = flt.text(item.task).strip()
        if task:
            owner = (flt.text(item.owner).strip() or None) if item.owner else None
            actions.append(ActionItem(owner=owner, task=task))
    return dataclasses.replace(
        content,
        tldr=flt.text(content.tldr),
        decisions=many(content.decisions),
        action_items=actions,
        qa=many(content.qa),
    )
