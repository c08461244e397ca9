"""The noise-suppressor seam: a stateful filter over one stream of PCM16 16 kHz mono.

Engines work on fixed frames (WebRTC's suppressor on 10 ms); callers push whatever
they have (a 20 ms WebSocket frame, a 1 s decoded file chunk, 3 odd bytes). The base
class does the framing: :meth:`NoiseSuppressor.process` returns exactly as many bytes
as it was given, and the stream comes out delayed by a fixed :attr:`delay_bytes` (one
frame, so 10 ms: the first call's output starts with that much silence), plus the
engine's own filter delay (6 ms for WebRTC's). The framing delay is what lets every
call answer at once with its own length whatever the chunk size; 16 ms of shift in
caption timestamps is below what anyone sees. :meth:`flush` returns the delayed tail,
for callers that want every sample; :meth:`process_all` gives a recording back aligned.

Not thread-safe: one suppressor per stream, used by one task or thread at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from mcustt.types import BYTES_PER_SAMPLE


class NoiseSuppressor(ABC):
    """One stream's suppressor. Subclasses implement :meth:`_frame`."""

    #: registry name
    name: ClassVar[str]
    #: the engine's frame, in bytes of PCM16 16 kHz mono
    frame_bytes: ClassVar[int]
    #: how far the engine's own output lags its input (its filter bank's overlap)
    engine_delay_bytes: ClassVar[int] = 0

    def __init__(self) -> None:
        self._in = bytearray()
        # Primed with one frame of silence: the framing delay (see the module doc).
        self._out = bytearray(self.frame_bytes)
        self._odd = b""  # half a sample: PCM16 frames always split on whole samples
        self._taken = 0  # bytes given to process() since the start (or the last flush)
        self._given = 0  # bytes it returned

    @property
    def delay_bytes(self) -> int:
        """How far the output lags the input: the framing (one frame of silence first)
        plus the engine's own delay."""
        return self.frame_bytes + self.engine_delay_bytes

    @abstractmethod
    def _frame(self, frame: bytes) -> bytes:
        """Suppress noise in one engine frame (exactly ``frame_bytes``; same length out)."""

    def process(self, pcm: bytes) -> bytes:
        """Feed a chunk of any size; returns exactly ``len(pcm)`` bytes of output."""
        if not pcm:
            return b""
        data = self._odd + pcm
        cut = len(data) - len(data) % BYTES_PER_SAMPLE
        self._odd = data[cut:]
        self._in += data[:cut]
        fb = self.frame_bytes
        whole = len(self._in) - len(self._in) % fb
        for i in range(0, whole, fb):
            self._out += self._frame(bytes(self._in[i : i + fb]))
        del self._in[:whole]
        # Never short: produced - consumed = frame_bytes - (input % frame_bytes) > 0.
        out = bytes(self._out[: len(pcm)])
        del self._out[: len(pcm)]
        self._taken += len(pcm)
        self._given += len(pcm)
        return out

    def flush(self) -> bytes:
        """End of stream: the delayed tail, exactly :attr:`delay_bytes` (the engine is
        fed silence to push out what it holds). The suppressor starts over afterwards."""
        needed = self._taken + self.delay_bytes - self._given
        fb = self.frame_bytes
        pending = bytes(self._in)
        while len(self._out) < needed:
            frame = pending[:fb]
            pending = pending[fb:]
            self._out += self._frame(frame + bytes(fb - len(frame)))
        out = bytes(self._out[:needed])
        self._in.clear()
        self._out = bytearray(self.frame_bytes)
        self._odd = b""
        self._taken = self._given = 0
        self._reset()
        return out

    @abstractmethod
    def _reset(self) -> None:
        """Forget the engine's state (after :meth:`flush`): the next stream starts clean."""

    def process_all(self, pcm: bytes) -> bytes:
        """A whole recording at once, aligned (no delay): same length as ``pcm`` (a
        trailing half sample is dropped, as PCM16 has none)."""
        out = self.process(pcm) + self.flush()
        return out[self.delay_bytes :][: len(pcm) - len(pcm) % BYTES_PER_SAMPLE]
