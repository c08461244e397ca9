"""The text-to-speech seam: text and a voice in, an OGG/Opus file out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from mcustt.config import Settings
from mcustt.errors import BadRequest, MCUSTTError
from mcustt.wire import ErrorCode

#: What every engine returns: an Ogg container holding one Opus stream.
FORMAT = "ogg_opus"


class TTSError(MCUSTTError):
    """The engine failed on a request it accepted (after its own retries): 502."""

    status_code = 502
    code = ErrorCode.TTS_FAILED


class TTSUnavailable(MCUSTTError):
    """The configured engine cannot run at all (espeak-ng not installed, openai without
    a key): 503. Text to speech is optional, so this never makes ``/readyz`` fail."""

    status_code = 503
    code = ErrorCode.TTS_UNAVAILABLE


class UnknownVoice(BadRequest):
    """A voice the engine does not have: 400 naming the ones it has."""

    code = ErrorCode.UNKNOWN_VOICE

    def __init__(self, voice: str, voices: Sequence[str]) -> None:
        super().__init__(f"unknown voice {voice!r}; this server's voices are: {', '.join(voices)}")


class Synthesizer(ABC):
    """Speaks text; one instance serves every request of a node, so :meth:`synthesize`
    may run concurrently. :mod:`mcustt.testing.tts` checks an implementation against
    this contract."""

    #: the registry name (``MCUSTT_TTS``)
    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    @abstractmethod
    def default_voice(self) -> str:
        """The voice used when a request names none (``MCUSTT_TTS_VOICE`` or the engine's)."""

    @abstractmethod
    async def voices(self) -> Sequence[str]:
        """Every voice :meth:`synthesize` accepts, the default among them.

        Raises:
            TTSUnavailable: the engine is not installed or not configured.
        """

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`TTSUnavailable` when unusable (the endpoints answer 503)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients at shutdown (safe to call again)."""

    async def resolve_voice(self, voice: str | None) -> str:
        """``voice`` as the engine names it (the default when ``None``).

        Raises:
            UnknownVoice: not one of :meth:`voices`.
        """
        if voice is None:
            return self.default_voice
        voices = await self.voices()
        by_lower = {v.lower(): v for v in voices}
        found = by_lower.get(voice.strip().lower())
        if found is None:
            raise UnknownVoice(voice, voices)
        return found

    @abstractmethod
    async def synthesize(self, text: str, *, voice: str | None = None) -> bytes:
        """``text`` spoken by ``voice``, as the bytes of an OGG/Opus file.

        Must not block the event loop (encoding in a thread, programs as subprocesses).
        The caller bounds ``text`` (non-blank, at most a few thousand characters).

        Raises:
            UnknownVoice: ``voice`` is not one of :meth:`voices`.
            TTSError: the engine failed, with a reason fit for an operator's log.
            TTSUnavailable: the engine is not installed or not configured.
        """
