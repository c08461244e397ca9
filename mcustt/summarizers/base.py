"""The summarizer seam: a transcript in, ``{tldr, decisions, actionItems, qa}`` out."""

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


class Summarizer(ABC):
    """Summarizes transcripts; one instance serves every job and request of a node, so
    :meth:`summarize` may run concurrently. :mod:`mcustt.testing.summarizer` checks an
    implementation against this contract."""

    #: the registry name (``MCUSTT_SUMMARIZER``)
    name: ClassVar[str]

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
    async def summarize(self, lines: Sequence[Line], *, lang: str) -> SummaryResult:
        """Summarize a transcript.

        Must not block the event loop (CPU work in a thread). An empty transcript gives
        an empty summary, not an error.

        Raises:
            SummarizerError: permanent failure, with a reason fit for the ``failed`` status.
            SummarizerUnavailable: the summarizer is not configured.
        """
