"""The diarization seam: 16 kHz mono PCM16 in, speaker turns out.

A :class:`Diarizer` answers *who spoke when* for a whole file (:mod:`mcustt.transcribe`
then gives each recognized utterance the speaker whose turns overlap it most, with
:func:`speaker_at`). Speakers are named ``"0"``, ``"1"``… in the order they first speak.

Two ways to tell voices apart:

* a stereo file with one speaker per channel (``channels=[left, right]``): turns come
  from which channel is speaking (:mod:`mcustt.diarization.channels`); no model is
  needed, so every diarizer, ``none`` included, does this. When the channels carry the
  same sound (a mono recording saved as stereo) the file is treated as mono;
* mono: an implementation's own model (:mod:`mcustt.diarization.resemblyzer`, the
  ``mcustt[diarization]`` extra). Without one, :meth:`Diarizer.diarize` raises
  :class:`DiarizationUnavailable` saying what to install, and the caller reports that
  instead of pretending there was one speaker.

:mod:`mcustt.testing.diarizer` checks an implementation against this contract.
"""

from __future__ import annotations

import asyncio
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from mcustt.config import Settings
from mcustt.diarization.channels import channel_turns
from mcustt.errors import BadRequest, MCUSTTError
from mcustt.types import BYTES_PER_MS
from mcustt.wire import ErrorCode


@dataclass(frozen=True, slots=True)
class Turn:
    """One speaker talking from ``start_ms`` to ``end_ms`` (from the file's start)."""

    speaker: str
    start_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


class DiarizationUnavailable(MCUSTTError):
    """This node cannot diarize mono audio (the extra is not installed, or its model
    failed to load). Reported in a transcript's ``diarization`` status; 503 if raised
    to a client."""

    status_code = 503
    code = ErrorCode.DIARIZATION_UNAVAILABLE


class DiarizationError(MCUSTTError):
    """The diarizer failed on audio it accepted. Reported in the transcript's
    ``diarization`` status (the words are still delivered, without speakers)."""

    status_code = 500
    code = ErrorCode.DIARIZATION_FAILED


class Diarizer(ABC):
    """Splits a file into speaker turns. One instance serves a whole node, so
    :meth:`diarize` may be called concurrently: at most
    ``MCUSTT_DIARIZATION_CONCURRENCY`` calls run at once, each in a worker thread (the
    event loop keeps running); the others wait their turn."""

    #: the registry name (``MCUSTT_DIARIZER``)
    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.diarization_concurrency)

    @property
    @abstractmethod
    def available(self) -> bool:
        """Whether mono audio can be diarized here (channels always can)."""

    @property
    def unavailable_reason(self) -> str | None:
        """Why :attr:`available` is false, for the response (``None`` when available)."""
        return None

    async def diarize(
        self, pcm16_16k: bytes, *, channels: Sequence[bytes] | None = None
    ) -> list[Turn]:
        """Speaker turns of ``pcm16_16k`` (16 kHz mono PCM16), sorted by start and not
        overlapping; an empty list when nobody speaks. ``channels``: the same audio
        per channel (each 16 kHz mono PCM16), for a stereo file with one speaker per
        channel.

        Raises:
            BadRequest: odd byte counts, or channels of different lengths.
            DiarizationUnavailable: mono audio, and no model here (see
                :attr:`unavailable_reason`).
            DiarizationError: the model failed.
        """
        _check_pcm(pcm16_16k, "audio")
        if channels is not None and len(channels) >= 2:
            for i, channel in enumerate(channels):
                _check_pcm(channel, f"channel {i}")
            if len({len(c) for c in channels}) != 1:
                raise BadRequest("every channel must hold the same number of samples")
            async with self._slots:
                split = await asyncio.to_thread(
                    channel_turns, list(channels), self.settings.vad_aggressiveness
                )
            if split is not None:
                return normalize_turns([Turn(str(ch), start, end) for ch, start, end in split])
        if not self.available:
            raise DiarizationUnavailable(self.unavailable_reason or "diarization is unavailable")
        if len(pcm16_16k) < 2 * BYTES_PER_MS:
            return []
        async with self._slots:
            try:
                turns = await asyncio.to_thread(self.diarize_sync, pcm16_16k)
            except MCUSTTError:
                raise
            except Exception as exc:
                raise DiarizationError(f"{self.name} diarizer failed: {exc}") from exc
        return normalize_turns(turns)

    @abstractmethod
    def diarize_sync(self, pcm16_16k: bytes) -> list[Turn]:
        """The mono work, run in a worker thread by :meth:`diarize` (which validated the
        audio). Loads whatever model it needs on first use, once per process."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the diarizer holds (safe to call again)."""


def extra_installed() -> bool:
    """Whether the ``mcustt[diarization]`` packages are installed (found, not imported:
    importing torch takes seconds)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "resemblyzer"))


def _check_pcm(pcm: bytes, what: str) -> None:
    if len(pcm) % 2:
        raise BadRequest(f"{what}: PCM16 needs an even number of bytes, got {len(pcm)}")


def normalize_turns(turns: Sequence[Turn]) -> list[Turn]:
    """Sorted, non-empty, non-overlapping turns; a speaker's adjacent turns merged;
    speakers renamed ``"0"``, ``"1"``… in the order they first speak."""
    ordered = sorted((t for t in turns if t.end_ms > t.start_ms), key=lambda t: t.start_ms)
    out: list[Turn] = []
    for turn in ordered:
        start = max(turn.start_ms, out[-1].end_ms) if out else turn.start_ms
        if start >= turn.end_ms:
            continue
        if out and out[-1].speaker == turn.speaker and start <= out[-1].end_ms:
            out[-1] = Turn(turn.speaker, out[-1].start_ms, turn.end_ms)
        else:
            out.append(Turn(turn.speaker, start, turn.end_ms))
    names: dict[str, str] = {}
    for turn in out:
        names.setdefault(turn.speaker, str(len(names)))
    return [Turn(names[t.speaker], t.start_ms, t.end_ms) for t in out]


def speaker_at(turns: Sequence[Turn], start_ms: int, end_ms: int) -> str | None:
    """The speaker whose turns overlap ``[start_ms, end_ms)`` most; when none overlaps
    (an utterance in a pause), the speaker of the nearest turn; ``None`` without turns."""
    if not turns:
        return None
    overlap: dict[str, int] = {}
    for turn in turns:
        shared = min(end_ms, turn.end_ms) - max(start_ms, turn.start_ms)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0) + shared
    if overlap:
        return max(overlap, key=lambda s: (overlap[s], -int(s) if s.isdigit() else 0))
    middle = (start_ms + end_ms) / 2

    def distance(turn: Turn) -> float:
        return max(turn.start_ms - middle, middle - turn.end_ms, 0.0)

    return min(turns, key=distance).speaker
