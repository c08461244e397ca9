"""Readable text from engines that give none (issue 17): sentence case, "I", end marks
and question marks restored on pocketsphinx-like output, without changing a word."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mcustt.captions import Shaper
from mcustt.captions.punctuation import PAUSE_MS, Restorer, is_question
from mcustt.recognizers import Recognizer
from mcustt.recognizers.base import Hypothesis, Word
from mcustt.recognizers.google import GoogleRecognizer
from mcustt.recognizers.sphinx import SphinxRecognizer

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def words(text: str) -> list[str]:
    """Words as WER counts them: lower case, no punctuation."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def restore(text: str, *, final: bool = True, keywords: tuple[str, ...] = ()) -> str:
    shaper = Shaper(punctuates=False, language="en-US", keywords=keywords)
    return shaper.shape(Hypothesis(text, final, "en-US")).text


def test_which_engines_get_restoration() -> None:
    assert SphinxRecognizer.punctuates is False
    assert GoogleRecognizer.punctuates is True
    assert Recognizer.punctuates is True  # plug-ins are trusted unless they say otherwise


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        ("good morning everyone", "Good morning everyone."),
        ("do we need a feature flag for the rollout", "Do we need a feature flag for the rollout?"),
        ("so can you take that", "So can you take that?"),
        ("what is the status", "What is the status?"),
        ("what we need is a flag", "What we need is a flag."),
        ("when we ship it we are done", "When we ship it we are done."),
        ("why not", "Why not?"),
        ("do it now", "Do it now."),
        ("that works for you doesn't it", "That works for you doesn't it?"),
        ("i think i'm late and i'll call on friday", "I think I'm late and I'll call on Friday."),
    ],
)
def test_finals_get_case_and_marks(said: str, shown: str) -> None:
    assert restore(said) == shown
    assert words(restore(said)) == said.split()


def test_interims_get_case_only() -> None:
    assert restore("do we need i think", final=False) == "Do we need I think"


def test_keywords_keep_their_case() -> None:
    keywords = ("Priya", "McUSTT", "New York", "kubernetes")
    assert (
        restore("priya deploys mcustt to new york on kubernetes", keywords=keywords)
        == "Priya deploys McUSTT to New York on kubernetes."
    )


def test_pauses_between_timed_words_end_sentences() -> None:
    said = "great marcus will update the docs"
    times = [(0, 400), (400 + PAUSE_MS, 1000), (1000, 1200), (1250, 1500), (1500, 1600)]
    times.append((1600 + PAUSE_MS - 1, 2000))  # just under: no boundary
    timed = tuple(Word(w, a, b) for w, (a, b) in zip(said.split(), times, strict=True))
    shaper = Shaper(punctuates=False, language="en-US")
    out = shaper.shape(Hypothesis(said, True, "en-US", words=timed))
    assert out.text == "Great. Marcus will update the docs."
    assert out.words is not None
    assert [w.text for w in out.words] == out.text.split()
    assert [(w.start_ms, w.end_ms) for w in out.words] == times


def test_other_languages_get_case_and_full_stops_only() -> None:
    shaper = Shaper(punctuates=False, language="de-DE")
    assert shaper.shape(Hypothesis("do we i", True, "de-DE")).text == "Do we i."
    assert Restorer().restore([], None, final=True, lang="en") == []


def test_question_rules() -> None:
    assert is_question(["okay", "so", "is", "it", "done"])
    assert not is_question(["okay"])
    assert not is_question([])


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*_en.json")))
def test_no_word_changes_on_the_fixtures(name: str) -> None:
    """WER computed on words is the same before and after restoration."""
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    for turn in meta["turns"]:
        said = " ".join(words(turn["text"]))
        shown = restore(said)
        assert words(shown) == said.split()
        assert shown[0].isupper() and shown[-1] in ".?"
