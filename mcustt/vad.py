"""Voice activity detection (webrtcvad) that cuts a PCM stream into utterances.

Long silences never reach the recognizer (a paid engine bills for them); a pre-roll of
recent frames goes with each utterance so no word's start is cut; utterances end after
a short hangover of silence, and are cut at ``max_ms`` (preferably at a pause after
80 % of it) so a final always comes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import webrtcvad

from mcustt.types import BYTES_PER_MS, SAMPLE_RATE

FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS  # 640


@dataclass(frozen=True, slots=True)
class Start:
    """An utterance starts; ``preroll`` (already-received audio) belongs to it."""

    at_ms: int  # offset of the utterance's first byte in the stream
    preroll: bytes


@dataclass(frozen=True, slots=True)
class Audio:
    pcm: bytes


@dataclass(frozen=True, slots=True)
class End:
    at_ms: int


VadEvent = Start | Audio | End


class Segmenter:
    def __init__(
        self,
        *,
        aggressiveness: int = 2,
        preroll_ms: int = 300,
        hangover_ms: int = 600,
        trigger_frames: int = 3,
        max_ms: int = 15_000,
    ) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._buf = bytearray()
        self._pos_ms = 0  # stream offset of the next frame to classify
        self._preroll: deque[bytes] = deque(maxlen=max(1, preroll_ms // FRAME_MS))
        self._recent: deque[bool] = deque(maxlen=5)
        self._trigger = trigger_frames
        self._hangover = max(1, hangover_ms // FRAME_MS)
        self._max_ms = max_ms
        self._soft_ms = int(max_ms * 0.8)
        self.in_speech = False
        self._silent_run = 0
        self._utt_ms = 0

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Classify the new audio; returns what happened, in order."""
        out: list[VadEvent] = []
        if not self._buf and len(pcm) == FRAME_BYTES:
            # The usual case (MCUs send 20 ms frames): no buffering, no copy.
            self._frame(pcm, out)
            return out
        self._buf += pcm
        while len(self._buf) >= FRAME_BYTES:
            frame = bytes(self._buf[:FRAME_BYTES])
            del self._buf[:FRAME_BYTES]
            self._frame(frame, out)
        return out

    def flush(self) -> list[VadEvent]:
        """End of stream: the partial frame joins an open utterance, which ends."""
        out: list[VadEvent] = []
        if self.in_speech:
            if self._buf:
                out.append(Audio(bytes(self._buf)))
                self._pos_ms += len(self._buf) // BYTES_PER_MS
            out.append(End(self._pos_ms))
            self.in_speech = False
        self._buf.clear()
        return out

    def _frame(self, frame: bytes, out: list[VadEvent]) -> None:
        speech = self._vad.is_speech(frame, SAMPLE_RATE)
        self._recent.append(speech)
        if not self.in_speech:
            self._preroll.append(frame)
            if sum(self._recent) >= self._trigger:
                preroll = b"".join(self._preroll)
                start = self._pos_ms + FRAME_MS - len(preroll) // BYTES_PER_MS
                out.append(Start(start, preroll))
                self._preroll.clear()
                self.in_speech = True
                self._silent_run = 0
                self._utt_ms = len(preroll) // BYTES_PER_MS
        else:
            out.append(Audio(frame))
            self._utt_ms += FRAME_MS
            self._silent_run = 0 if speech else self._silent_run + 1
            end = (
                self._silent_run >= self._hangover
                or self._utt_ms >= self._max_ms
                or (self._utt_ms >= self._soft_ms and not speech)
            )
            if end:
                out.append(End(self._pos_ms + FRAME_MS))
                self.in_speech = False
                self._recent.clear()
        self._pos_ms += FRAME_MS
