"""The summarizer seam's contract, as a test suite any implementation can run against itself.

Subclass :class:`SummarizerContract` in a test module (the subclass's name starts with
``Test``) and provide a ``summarizer`` fixture yielding one, configured and ready (and
whatever it talks to, running)::

    from mcustt.testing.summarizer import SummarizerContract

    class TestMySummarizer(SummarizerContract):
        @pytest.fixture
        async def summarizer(self) -> AsyncIterator[Summarizer]:
            summarizer = MySummarizer(Settings(...))
            yield summarizer
            await summarizer.aclose()

A summarizer that depends on configuration or on a service that can fail (an API)
subclasses :class:`RemoteSummarizerContract` instead and also provides
``unconfigured_summarizer`` (what the settings give when its configuration is missing)
and ``failing_summarizer`` (its service refuses every request).

What is asserted is what :mod:`mcustt.summarizers.base` documents and what its callers
rely on (the summary job in :mod:`mcustt.jobs`, the batch endpoint and the 503 check in
:mod:`mcustt.summary_api`): the ``{tldr, decisions, actionItems, qa}`` shape with its
types, a JSON-ready ``content``, ``model`` and the caller's ``lang`` on the result, an
empty summary (not an error) for an empty transcript, the event loop kept running,
concurrent calls on one instance, ``aclose`` callable twice, and failures raised as
:class:`SummarizerError` (502) or :class:`SummarizerUnavailable` (503) with a message
fit for the summary's ``failed`` status.

The meeting AI on the same seam (issue 16) is held to it too: ``summarize`` takes an
optional ``prompt``; ``ask`` answers with citations that are lines of the transcript
given (seq, speaker and text unchanged) and an honest answer, without citations, when
nothing was said; ``write_document`` returns markdown, or, for an engine whose class says
``writes_documents = False``, raises
:class:`SummarizerUnavailable` (503 ``SUMMARIZER_UNCONFIGURED``) instead of a fake.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from mcustt import wire
from mcustt.summarizers.base import (
    Answer,
    Document,
    Line,
    Summarizer,
    SummarizerError,
    SummarizerUnavailable,
    SummaryContent,
    SummaryResult,
)
from mcustt.wire import ErrorCode

__all__ = [
    "MEETING",
    "RemoteSummarizerContract",
    "SummarizerContract",
    "assert_answer",
    "long_meeting",
]

#: A short meeting with one of everything a summary reports: a decision, commitments
#: with and without a named owner, a question and its answer.
MEETING: tuple[Line, ...] = tuple(
    Line(text=text, speaker=speaker, seq=seq, ts=1_700_000_000.0 + 7 * seq, lang="en-US")
    for seq, (speaker, text) in enumerate(
        [
            ("Alice", "Good morning everyone, this is the weekly billing page review."),
            ("Bob", "The billing page is ready and all the tests are green."),
            ("Alice", "Do we need a feature flag for the rollout?"),
            ("Bob", "Yes, we need a feature flag for the first week."),
            ("Alice", "Then we decided to ship the billing page on Friday."),
            ("Priya", "I'll write the database migration for the new invoices."),
            ("Alice", "Marcus will update the pricing documentation before Friday."),
            ("Marcus", "Sure, I can do that tomorrow morning."),
            ("Alice", "Great, thanks everyone, see you next week."),
        ],
        start=1,
    )
)

_EMPTY: wire.SummaryContent = {"tldr": "", "decisions": [], "actionItems": [], "qa": []}


def long_meeting(words: int = 3000) -> list[Line]:
    """:data:`MEETING` said over and over, to about ``words`` words (no timings)."""
    lines: list[Line] = []
    count = 0
    while count < words:
        for line in MEETING:
            lines.append(Line(text=line.text, speaker=line.speaker, seq=len(lines) + 1))
            count += len(line.text.split())
    return lines


def assert_summary(result: SummaryResult, summarizer: Summarizer, *, lang: str) -> None:
    """The result is well formed, whatever its wording."""
    assert isinstance(result, SummaryResult)
    assert result.lang == lang
    assert result.model == summarizer.model
    content = result.content
    assert isinstance(content, SummaryContent)
    assert isinstance(content.tldr, str)
    for entries in (content.decisions, content.qa):
        assert isinstance(entries, list)
        assert all(isinstance(e, str) and e.strip() for e in entries), entries
    assert isinstance(content.action_items, list)
    for item in content.action_items:
        # "Nobody took it" is None, never a blank owner.
        assert item.owner is None or (isinstance(item.owner, str) and item.owner.strip())
        assert isinstance(item.task, str) and item.task.strip(), item
    wire = content.to_json()
    assert set(wire) == {"tldr", "decisions", "actionItems", "qa"}
    assert all(set(item) == {"owner", "task"} for item in wire["actionItems"])
    # The job stores it in a JSON column and serves it as is.
    assert json.loads(json.dumps(wire)) == wire


def assert_answer(answer: Answer, summarizer: Summarizer, lines: tuple[Line, ...]) -> None:
    """The answer is well formed and cites only lines of ``lines``, as they are."""
    assert isinstance(answer, Answer)
    assert isinstance(answer.answer, str) and answer.answer.strip()
    assert isinstance(answer.extractive, bool)
    assert answer.model == summarizer.model
    given = {(line.seq, line.speaker, " ".join(line.text.split())) for line in lines}
    for citation in answer.citations:
        assert (citation.seq, citation.speaker, citation.text) in given, citation
    doc = answer.to_json()
    assert set(doc) == {"answer", "citations", "extractive", "model"}
    assert json.loads(json.dumps(doc)) == doc


class SummarizerContract:
    """What every summarizer promises. Provide ``summarizer`` (see the module docstring)."""

    @pytest.fixture
    async def summarizer(self) -> AsyncIterator[Summarizer]:
        raise NotImplementedError(
            "subclass SummarizerContract and provide a summarizer fixture yielding a "
            "configured, ready Summarizer"
        )
        yield  # pragma: no cover - makes this an async generator like the overrides

    async def test_has_a_name_and_a_model(self, summarizer: Summarizer) -> None:
        # The name selects it (MCUSTT_SUMMARIZER); the model is stored with each summary.
        assert isinstance(type(summarizer).name, str) and type(summarizer).name
        assert isinstance(summarizer.model, str) and summarizer.model

    async def test_check_passes_when_configured(self, summarizer: Summarizer) -> None:
        await summarizer.check()

    async def test_a_meeting_gives_a_well_formed_summary(self, summarizer: Summarizer) -> None:
        result = await summarizer.summarize(MEETING, lang="en-US")
        assert_summary(result, summarizer, lang="en-US")
        assert result.content.tldr.strip(), "a meeting that said something has a tldr"

    @pytest.mark.parametrize("lang", ["en", "es", "de-DE", "pt-BR"])
    async def test_the_language_is_passed_through(self, summarizer: Summarizer, lang: str) -> None:
        result = await summarizer.summarize(MEETING, lang=lang)
        assert_summary(result, summarizer, lang=lang)

    @pytest.mark.parametrize(
        "lines",
        [[], [Line(text="")], [Line(text="   "), Line(text="\n\t", speaker="Alice")]],
        ids=["no-lines", "empty-line", "blank-lines"],
    )
    async def test_an_empty_transcript_gives_an_empty_summary(
        self, summarizer: Summarizer, lines: list[Line]
    ) -> None:
        result = await summarizer.summarize(lines, lang="fr")
        assert_summary(result, summarizer, lang="fr")
        assert result.content.to_json() == _EMPTY

    async def test_bare_lines_are_enough(self, summarizer: Summarizer) -> None:
        # The batch endpoint sends text alone: no speaker, seq, time or language.
        lines = [Line(text=line.text) for line in MEETING]
        result = await summarizer.summarize(lines, lang="en")
        assert_summary(result, summarizer, lang="en")

    async def test_the_transcript_is_not_modified(self, summarizer: Summarizer) -> None:
        lines = list(MEETING)
        await summarizer.summarize(lines, lang="en")
        assert lines == list(MEETING)
        # Any sequence will do, a tuple included.
        assert_summary(await summarizer.summarize(MEETING, lang="en"), summarizer, lang="en")

    async def test_the_event_loop_keeps_running(self, summarizer: Summarizer) -> None:
        # Summaries run on the server's loop, next to live sessions: CPU work goes to a
        # thread, I/O is awaited. A ticker that runs on every loop turn must get some.
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        lines = long_meeting()
        task = asyncio.create_task(ticker())
        try:
            await asyncio.sleep(0)
            before = ticks
            result = await summarizer.summarize(lines, lang="en")
            during = ticks - before
        finally:
            task.cancel()
        assert_summary(result, summarizer, lang="en")
        assert during >= 1, "the event loop stalled while summarizing"

    async def test_concurrent_calls_on_one_instance(self, summarizer: Summarizer) -> None:
        # One instance serves every job and request of the node.
        langs = ["en", "es", "fr"]
        results = await asyncio.gather(
            *(summarizer.summarize(MEETING, lang=lang) for lang in langs)
        )
        for lang, result in zip(langs, results, strict=True):
            assert_summary(result, summarizer, lang=lang)

    async def test_a_prompt_is_accepted(self, summarizer: Summarizer) -> None:
        result = await summarizer.summarize(
            MEETING, lang="en", prompt="Focus on the rollout and who owns what."
        )
        assert_summary(result, summarizer, lang="en")

    async def test_a_question_is_answered_from_the_transcript(self, summarizer: Summarizer) -> None:
        answer = await summarizer.ask(MEETING, "Who will write the database migration?", lang="en")
        assert_answer(answer, summarizer, MEETING)
        assert 6 in [c.seq for c in answer.citations], answer

    async def test_a_question_about_nothing_said_cites_nothing(
        self, summarizer: Summarizer
    ) -> None:
        for lines in ([], [Line(text=" ")]):
            answer = await summarizer.ask(lines, "What was decided about the budget?", lang="en")
            assert_answer(answer, summarizer, ())
            assert answer.citations == []

    async def test_concurrent_questions_on_one_instance(self, summarizer: Summarizer) -> None:
        questions = ["Who will write the database migration?", "Do we need a feature flag?"]
        answers = await asyncio.gather(*(summarizer.ask(MEETING, q, lang="en") for q in questions))
        for answer in answers:
            assert_answer(answer, summarizer, MEETING)

    async def test_a_document_is_markdown_or_refused(self, summarizer: Summarizer) -> None:
        prompt = "Write the meeting minutes with decisions and action items."
        # An engine that cannot write documents (no language model) says so, and refuses
        # with SummarizerUnavailable rather than return something else.
        if not summarizer.writes_documents:
            with pytest.raises(SummarizerUnavailable) as info:
                await summarizer.write_document(MEETING, prompt, lang="en")
            assert info.value.status_code == 503
            assert info.value.code == ErrorCode.SUMMARIZER_UNCONFIGURED
            assert info.value.message.strip()
            return
        document = await summarizer.write_document(MEETING, prompt, lang="en")
        assert isinstance(document, Document)
        assert isinstance(document.markdown, str) and document.markdown.strip()
        assert document.model == summarizer.model

    async def test_aclose_can_be_called_twice(self, summarizer: Summarizer) -> None:
        await summarizer.summarize(MEETING, lang="en")
        await summarizer.aclose()
        await summarizer.aclose()


class RemoteSummarizerContract(SummarizerContract):
    """What a summarizer that needs configuration and a service promises on top of
    :class:`SummarizerContract`. Also provide ``unconfigured_summarizer`` and
    ``failing_summarizer`` (see the module docstring)."""

    @pytest.fixture
    async def unconfigured_summarizer(self) -> AsyncIterator[Summarizer]:
        raise NotImplementedError(
            "provide an unconfigured_summarizer fixture: one built from settings that "
            "lack what it needs"
        )
        yield  # pragma: no cover

    @pytest.fixture
    async def failing_summarizer(self) -> AsyncIterator[Summarizer]:
        raise NotImplementedError(
            "provide a failing_summarizer fixture: one whose service refuses every request"
        )
        yield  # pragma: no cover

    async def test_unconfigured_check_and_summarize_are_unavailable(
        self, unconfigured_summarizer: Summarizer
    ) -> None:
        # check() is what /readyz and the summary endpoints turn into a 503.
        with pytest.raises(SummarizerUnavailable) as info:
            await unconfigured_summarizer.check()
        assert info.value.status_code == 503
        assert info.value.code == ErrorCode.SUMMARIZER_UNCONFIGURED
        assert info.value.message.strip()
        with pytest.raises(SummarizerUnavailable):
            await unconfigured_summarizer.summarize(MEETING, lang="en")
        with pytest.raises(SummarizerUnavailable):
            await unconfigured_summarizer.ask(MEETING, "Who ships it?", lang="en")
        with pytest.raises(SummarizerUnavailable):
            await unconfigured_summarizer.write_document(MEETING, "Minutes", lang="en")
        await unconfigured_summarizer.aclose()

    async def test_a_failing_service_is_a_summarizer_error(
        self, failing_summarizer: Summarizer
    ) -> None:
        # The job marks the summary failed with this message; nothing else may escape.
        await failing_summarizer.check()
        with pytest.raises(SummarizerError) as info:
            await failing_summarizer.summarize(MEETING, lang="en")
        assert info.value.status_code == 502
        assert info.value.code == ErrorCode.SUMMARIZER_FAILED
        assert info.value.message.strip()
        with pytest.raises(SummarizerError):
            await failing_summarizer.ask(MEETING, "Who ships it?", lang="en")
        if failing_summarizer.writes_documents:
            with pytest.raises(SummarizerError):
                await failing_summarizer.write_document(MEETING, "Minutes", lang="en")

    async def test_a_failing_service_leaves_empty_transcripts_alone(
        self, failing_summarizer: Summarizer
    ) -> None:
        result = await failing_summarizer.summarize([], lang="en")
        assert_summary(result, failing_summarizer, lang="en")
        assert result.content.to_json() == _EMPTY
