"""The summarizer seam: a transcript in, ``{tldr, decisions, actionItems, qa}`` out; and
the other meeting AI on the same engine: answers to a question about a meeting
(:meth:`Summarizer.ask`) and documents written to a custom prompt
(:meth:`Summarizer.write_document`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from mcustt import wire
from mcustt.config import Settings
from mcustt.errors import MCUSTTError
from mcustt.wire import ErrorCode


class SummarizerError(MCUSTTError):
    """The summarizer failed for good (after its own retries); the summary is ``failed``."""

    status_code = 502
    code = ErrorCode.SUMMARIZER_FAILED


class SummarizerUnavailable(MCUSTTError):
    """The configured summarizer cannot run at all (e.g. openai without a key): 503."""

    status_code = 503
    code = ErrorCode.SUMMARIZER_UNCONFIGURED


@dataclass(frozen=True)
class Line:
    """One transcript line given to a summarizer."""

    text: str
    speaker: str | None = None
    seq: int | None = None
    ts: float | None = None  # unix seconds
    lang: str | None = None


@dataclass(frozen=True)
class ActionItem:
    owner: str | None
    task: str


@dataclass(frozen=True)
class SummaryContent:
    tldr: str
    decisions: list[str] = field(default_factory=list)
    action_items: list[ActionItem] = field(default_factory=list)
    qa: list[str] = field(default_factory=list)

    def to_json(self) -> wire.SummaryContent:
        """The wire shape of §11 ``content``."""
        return {
            "tldr": self.tldr,
            "decisions": list(self.decisions),
            "actionItems": [{"owner": a.owner, "task": a.task} for a in self.action_items],
            "qa": list(self.qa),
        }


@dataclass(frozen=True)
class SummaryResult:
    content: SummaryContent
    model: str
    lang: str


@dataclass(frozen=True)
class Citation:
    """A transcript line an answer rests on."""

    seq: int | None
    text: str
    speaker: str | None = None

    def to_json(self) -> wire.Citation:
        doc: wire.Citation = {"seq": self.seq, "text": self.text}
        if self.speaker:
            doc["speaker"] = self.speaker
        return doc


@dataclass(frozen=True)
class Answer:
    """An answer to a question about a meeting.

    ``extractive``: the answer quotes the transcript's lines instead of being written by a
    language model (the embedded engine), so a client can present it as such.
    """

    answer: str
    citations: list[Citation]
    extractive: bool
    model: str

    def to_json(self) -> wire.Answer:
        return {
            "answer": self.answer,
            "citations": [c.to_json() for c in self.citations],
            "extractive": self.extractive,
            "model": self.model,
        }


@dataclass(frozen=True)
class Document:
    """A markdown document written from a transcript to a caller's prompt."""

    markdown: str
    model: str


class Summarizer(ABC):
    """Summarizes transcripts; one instance serves every job and request of a node, so
    :meth:`summarize` may run concurrently. :mod:`mcustt.testing.summarizer` checks an
    implementation against this contract."""

    #: the registry name (``MCUSTT_SUMMARIZER``)
    name: ClassVar[str]
    #: whether :meth:`write_document` can work (a language model behind it): without it
    #: ``POST …/documents`` answers 503 at once instead of queueing a job that must fail
    writes_documents: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def model(self) -> str:
        return self.name

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`SummarizerUnavailable` when unusable (``/readyz``, 503s)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients at shutdown (safe to call again)."""

    @abstractmethod
    async def summarize(
        self, lines: Sequence[Line], *, lang: str, prompt: str | None = None
    ) -> SummaryResult:
        """Summarize a transcript.

        Must not block the event loop (CPU work in a thread). An empty transcript gives
        an empty summary, not an error. ``prompt`` is the caller's extra instruction (what
        to focus on, a tone); an engine that cannot follow instructions ignores it.

        Raises:
            SummarizerError: permanent failure, with a reason fit for the ``failed`` status.
            SummarizerUnavailable: the summarizer is not configured.
        """

    async def ask(self, lines: Sequence[Line], question: str, *, lang: str) -> Answer:
        """Answer ``question`` from the transcript, citing the lines the answer rests on
        (each citation one of ``lines``, with its ``seq``, speaker and text).

        A transcript that does not answer it gives an answer saying so and no citations,
        not an error. The default: this engine cannot answer questions.

        Raises:
            SummarizerError: permanent failure of the engine's service.
            SummarizerUnavailable: not configured, or the engine cannot answer questions.
        """
        raise SummarizerUnavailable(
            f"the {self.name} summarizer cannot answer questions about a meeting"
        )

    async def write_document(self, lines: Sequence[Line], prompt: str, *, lang: str) -> Document:
        """A markdown document written from the transcript as ``prompt`` asks.

        The default: this engine cannot write documents (only a language model can, so an
        engine without one says so rather than returning something that is not what was
        asked for).

        Raises:
            SummarizerError: permanent failure of the engine's service.
            SummarizerUnavailable: not configured, or the engine cannot write documents.
        """
        raise SummarizerUnavailable(
            f"the {self.name} summarizer cannot write documents; configure a language "
            "model (MCUSTT_SUMMARIZER=openai)"
        )
