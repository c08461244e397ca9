"""Voice activity detection (webrtcvad) that cuts a PCM stream into utterances.

Long silences never reach the recognizer (a paid engine bills for them); a pre-roll of
recent frames goes with each utterance so no word's start is cut; utterances end after
a pause (the hangover), and are cut at ``max_ms`` (preferably at a pause after 80 % of
it) so a final always comes.

Endpointing (issue 17): how soon a pause ends an utterance decides how soon its final
reaches viewers, and how often a sentence is cut in two. Two rules, as production
endpointers do:

* **adaptive hangover**: in the first ``fast_after_ms`` of an utterance's speech a pause
  must last ``silence_ms`` to end it (short utterances and sentence pauses early in a
  turn stay whole); once the utterance is that long, ``fast_silence_ms`` ends it (it
  already holds a sentence's worth of words, and the viewer is waiting);
* **energy drop**: webrtcvad keeps saying "speech" for 60-140 ms after the voice stops
  (its own overhang). A frame whose peak is ``energy_drop_db`` below the utterance's
  own speech level counts as silence whatever webrtcvad says, so the hangover starts
  when the voice stops. Only a drop relative to this utterance's level counts: in
  steady noise louder than that, webrtcvad alone decides, as before.
"""

from __future__ import annotations

import sys
from array import array
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import webrtcvad

from mcustt.types import BYTES_PER_MS, SAMPLE_RATE

if TYPE_CHECKING:
    from mcustt.config import Settings

FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS  # 640
#: the speech level decays by this factor per frame (~4 dB/s) so one loud click early
#: in an utterance does not make the rest of it look silent
_LEVEL_DECAY = 0.99
#: after an utterance ends, frames that far below its level cannot start the next one
#: (webrtcvad's overhang would), a gate that fades by this factor per frame (~0.8 s)
_GATE_DECAY = 0.9
_BIG_ENDIAN = sys.byteorder == "big"


@dataclass(frozen=True, slots=True)
class Endpointing:
    """When a pause ends an utterance (``MCUSTT_ENDPOINT_*``; see the module doc)."""

    #: the pause that ends an utterance shorter than ``fast_after_ms`` of speech
    silence_ms: int = 600
    #: the pause that ends an utterance once it has ``fast_after_ms`` of speech
    fast_silence_ms: int = 120
    #: speech (from the utterance's start to the pause) after which ``fast_silence_ms``
    #: applies; 0: always; at least ``max_ms``: never
    fast_after_ms: int = 2_000
    #: a frame this far below the utterance's speech level is silence even while
    #: webrtcvad still says speech; 0 turns the rule off (webrtcvad alone)
    energy_drop_db: float = 35.0


def endpointing_of(settings: Settings) -> Endpointing:
    """The node's endpointing (``MCUSTT_ENDPOINT_*``)."""
    return Endpointing(
        silence_ms=settings.endpoint_silence_ms,
        fast_silence_ms=settings.endpoint_fast_silence_ms,
        fast_after_ms=settings.endpoint_fast_after_ms,
        energy_drop_db=settings.endpoint_energy_drop_db,
    )


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
        hangover_ms: int | None = None,
        trigger_frames: int = 3,
        max_ms: int = 15_000,
        endpointing: Endpointing | None = None,
    ) -> None:
        ep = endpointing or Endpointing()
        if hangover_ms is not None:
            # The old single hangover: one pause length, whatever the utterance's length.
            ep = Endpointing(
                silence_ms=hangover_ms,
                fast_silence_ms=hangover_ms,
                fast_after_ms=0,
                energy_drop_db=ep.energy_drop_db,
            )
        self._vad = webrtcvad.Vad(aggressiveness)
        self._buf = bytearray()
        self._pos_ms = 0  # stream offset of the next frame to classify
        self._preroll: deque[bytes] = deque(maxlen=max(1, preroll_ms // FRAME_MS))
        self._recent: deque[bool] = deque(maxlen=5)
        self._trigger = trigger_frames
        self._hangover = max(1, ep.silence_ms // FRAME_MS)
        self._fast_hangover = max(1, min(ep.fast_silence_ms, ep.silence_ms) // FRAME_MS)
        self._fast_after_ms = max(0, ep.fast_after_ms)
        #: peak amplitude ratio of ``energy_drop_db`` (0: the rule is off)
        self._drop = 10 ** (ep.energy_drop_db / 20) if ep.energy_drop_db > 0 else 0.0
        self._max_ms = max_ms
        self._soft_ms = int(max_ms * 0.8)
        self.in_speech = False
        self._silent_run = 0
        self._utt_ms = 0
        self._trigger_ms = 0  # of the open utterance: its pre-roll
        self._spoken_ms = 0  # of the open utterance: from its trigger to its last speech
        self._level = 0.0  # of the open utterance: its (decaying) speech peak
        self._gate = 0.0  # after an utterance: the (fading) level new speech must reach
        #: the pause (ms) that ended the last utterance: the audio between the end of
        #: its speech and its End (the caption-health metrics subtract it)
        self.trailing_silence_ms = 0

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
            self.trailing_silence_ms = self._silent_run * FRAME_MS
            out.append(End(self._pos_ms))
            self.in_speech = False
        self._buf.clear()
        return out

    def _frame(self, frame: bytes, out: list[VadEvent]) -> None:
        speech = self._vad.is_speech(frame, SAMPLE_RATE)
        if not self.in_speech and self._gate:
            # The tail of the utterance that just ended is no new speech.
            if speech:
                speech = _peak(frame) * self._drop >= self._gate
            self._gate = self._gate * _GATE_DECAY if self._gate >= 1 else 0.0
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
                self._trigger_ms = self._utt_ms
                self._spoken_ms = 0
                # The level starts from the speech that triggered the utterance.
                self._level = max(_peak(f) for f in self._recent_frames(preroll))
                self.trailing_silence_ms = 0
        else:
            out.append(Audio(frame))
            self._utt_ms += FRAME_MS
            if speech and self._drop:
                peak = _peak(frame)
                self._level = max(peak, self._level * _LEVEL_DECAY)
                # The voice stopped though webrtcvad's overhang still says speech.
                speech = peak * self._drop >= self._level
            if speech:
                self._silent_run = 0
                self._spoken_ms = self._utt_ms - self._trigger_ms
            else:
                self._silent_run += 1
            # The utterance's length before this pause picks the pause that ends it.
            hangover = (
                self._fast_hangover if self._spoken_ms >= self._fast_after_ms else self._hangover
            )
            end = (
                self._silent_run >= hangover
                or self._utt_ms >= self._max_ms
                or (self._utt_ms >= self._soft_ms and not speech)
            )
            if end:
                self.trailing_silence_ms = self._silent_run * FRAME_MS
                out.append(End(self._pos_ms + FRAME_MS))
                self.in_speech = False
                self._recent.clear()
                self._gate = self._level if self._drop else 0.0
        self._pos_ms += FRAME_MS

    def _recent_frames(self, preroll: bytes) -> list[bytes]:
        """The pre-roll's last frames, those webrtcvad judged with the trigger."""
        n = len(self._recent)
        tail = preroll[-n * FRAME_BYTES :] if n else preroll[-FRAME_BYTES:]
        return [tail[i : i + FRAME_BYTES] for i in range(0, len(tail), FRAME_BYTES)] or [b""]


def _peak(frame: bytes) -> float:
    """The frame's peak amplitude (0..32768): C loops (max/min), no NumPy, ~3 us."""
    if len(frame) < 2:
        return 0.0
    samples = array("h", frame[: len(frame) & ~1])
    if _BIG_ENDIAN:
        samples.byteswap()  # PCM16 on the wire is little-endian
    return float(max(max(samples), -min(samples)))
