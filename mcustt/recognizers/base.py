"""The recognizer seam: streaming speech-to-text behind one small base class.

The session pipeline owns voice activity detection. For every utterance (a run of
speech with some pre-roll, cut at ``max_utterance_s``) it opens one
:class:`RecognizerStream`, feeds that utterance's audio in order, then calls
:meth:`RecognizerStream.finish`. A task of the pipeline consumes
:meth:`RecognizerStream.results` concurrently.

Implementations must never block the event loop: CPU-bound decoding runs in worker
processes, network engines use asyncio clients.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

from mcustt.config import Settings
from mcustt.errors import MCUSTTError, UnsupportedLanguage
from mcustt.wire import CloseCode, ErrorCode


class RecognizerError(MCUSTTError):
    """The engine failed. ``fatal=True`` ends the session's ingest with an error frame."""

    status_code = 503
    code = ErrorCode.RECOGNIZER_FAILED
    close_code = CloseCode.INTERNAL_ERROR

    def __init__(self, message: str, *, fatal: bool = True) -> None:
        super().__init__(message)
        self.fatal = fatal


def language_matches(hint: str, supported: str) -> bool:
    """``en`` serves ``en-GB`` and ``en-US`` (and the other way round); ``en-GB`` does
    not serve ``en-US``. Codes are compared case-insensitively."""
    h, s = hint.lower(), supported.lower()
    if h == s:
        return True
    h_lang, _, h_rest = h.partition("-")
    s_lang, _, s_rest = s.partition("-")
    return h_lang == s_lang and (not h_rest or not s_rest)


@dataclass(frozen=True)
class Word:
    """One recognized word with its timing (issue 17).

    Attributes:
        text: the word as it will be shown (after casing/punctuation, when applied).
        start_ms / end_ms: audio offsets relative to the first byte fed to the stream
            (the pipeline moves them to session time).
        confidence: 0 to 1, or None when the engine gives none.
    """

    text: str
    start_ms: int
    end_ms: int
    confidence: float | None = None


@dataclass(frozen=True)
class Hypothesis:
    """One recognition result of a stream.

    Attributes:
        text: the recognized words (may be empty for interims; empty finals are dropped).
        is_final: False for an interim that a later result replaces; True when the
            engine will not change this text again. A stream may produce several finals
            (an engine may split a long utterance); each final closes the text that
            preceded it, and later interims belong to the next final.
        lang: BCP-47 code the engine detected or used (None = the stream's language).
        start_ms / end_ms: audio offsets of the words, relative to the first byte fed
            to this stream (None when the engine does not say).
        confidence: the engine's own estimate that the words are right, 0 to 1 (None
            when it gives none: pocketsphinx's posteriors are not calibrated enough to
            pass off as one).
    """

    text: str
    is_final: bool
    lang: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    confidence: float | None = None
    #: issue 17: the words of ``text`` in order, with timings (None: the engine gave
    #: none, e.g. for interims)
    words: tuple[Word, ...] | None = None


class RecognizerStream(ABC):
    """Recognition of one utterance; created by :meth:`Recognizer.open_stream`."""

    @abstractmethod
    async def feed(self, pcm: bytes) -> None:
        """Append audio (PCM16 LE, 16 kHz, mono; any length, even byte count).

        May await to apply backpressure. Raises:
            RecognizerError: the engine failed.
        """

    def feed_nowait(self, pcm: bytes) -> bool:
        """Append audio if that needs no waiting; ``False`` (nothing taken) when the
        caller must ``await feed(pcm)`` instead. The pipeline calls this for each frame
        it handles in the transport's task; the default always defers.

        Raises:
            RecognizerError: the engine failed.
        """
        return False

    @abstractmethod
    async def finish(self) -> None:
        """No more audio for this utterance: the engine flushes its last final(s).

        After this, :meth:`results` yields what remains and then stops.
        """

    @abstractmethod
    def results(self) -> AsyncIterator[Hypothesis]:
        """Hypotheses in order, ending after :meth:`finish` once all are delivered.

        Raises:
            RecognizerError: the engine failed (``fatal`` says whether to give up).
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release resources at once (idempotent); pending results are discarded and
        :meth:`results` ends without an error."""


class Recognizer(ABC):
    """A speech engine, shared by every session of the process."""

    #: the registry name (``MCUSTT_RECOGNIZER``)
    name: ClassVar[str]
    #: the languages this engine can recognize (BCP-47; a bare ``en`` is every English);
    #: ``None``: any code (the engine itself refuses the ones it lacks)
    languages: ClassVar[frozenset[str] | None] = None
    #: whether ``keywords`` reach the engine as recognition hints (README's table)
    honours_keywords: ClassVar[bool] = False
    #: issue 17: whether the engine's text has sentence case and punctuation; False
    #: (pocketsphinx) has the pipeline restore them (:mod:`mcustt.captions`). True by
    #: default: most engines punctuate, and restoring theirs would only do harm.
    punctuates: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start pools or clients; called once in the app's lifespan."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop pools or clients; called once at shutdown (idempotent all the same)."""

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`RecognizerError` if the engine is not usable (``/readyz``)."""

    def load(self) -> float | None:
        """How far behind the engine is (issue 13's admission control): 0 idle, 1
        saturated (another stream would slow the ones it decodes); ``None`` when the
        engine cannot tell (a remote service). Cheap: read on every new producer."""
        return None

    @property
    def model(self) -> str:
        return self.name

    def check_languages(self, hints: Sequence[str]) -> None:
        """Refuse hints this engine cannot serve, naming the ones it can.

        Raises:
            UnsupportedLanguage: a hint no supported language matches.
        """
        supported = self.languages
        if supported is None:
            return
        bad = [h for h in hints if not any(language_matches(h, s) for s in supported)]
        if bad:
            raise UnsupportedLanguage(
                f"the {self.name} recognizer cannot recognize {', '.join(bad)}; it supports "
                f"{', '.join(sorted(supported))}"
            )

    @abstractmethod
    def open_stream(
        self,
        *,
        language: str,
        auto_detect: bool,
        language_hints: Sequence[str] = (),
        keywords: Sequence[str] = (),
    ) -> RecognizerStream:
        """A new stream for one utterance.

        Args:
            language: the session's sourceLang (BCP-47), used as-is when not auto-detecting.
            auto_detect: let the engine choose among its candidate languages.
            language_hints: the session's candidate languages (issue 15, already
                checked with :meth:`check_languages`); when given, the engine chooses
                among exactly these.
            keywords: phrases to favour (the session's, then the tenant's; at most 100).
                Engines that cannot use them ignore them (:attr:`honours_keywords`).
        """
