"""Audio rules of the contract (§4) and the WebRTC audio conversion, shared by the ingest
adapters."""

from __future__ import annotations

from typing import Any

from mcustt.errors import FrameTooLarge, InvalidAudioFormat

MAX_FRAME_BYTES = 1024 * 1024
MAX_CONTROL_BYTES = 8 * 1024


def check_frame(frame: bytes) -> None:
    """Raise the contract's error for a frame that is not raw PCM16.

    Raises:
        FrameTooLarge: over 1 MB (close 1009).
        InvalidAudioFormat: a WAV header (``RIFF``) or an odd byte count (close 1003).
    """
    if len(frame) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"audio frame of {len(frame)} bytes exceeds 1 MB")
    if frame[:4] == b"RIFF":
        raise InvalidAudioFormat("send raw PCM16 frames, not a WAV file (RIFF header)")
    if len(frame) % 2:
        raise InvalidAudioFormat(f"odd frame length {len(frame)}: PCM16 has 2 bytes a sample")


class PcmResampler:
    """Decoded WebRTC audio (``av.AudioFrame``, any rate/layout) to PCM16 16 kHz mono.

    Output comes in whole 20 ms chunks (640 bytes): the pipeline counts audio per chunk
    in whole milliseconds, and a fixed chunk keeps that count exact whatever sizes the
    resampler's filter hands back. ``flush()`` returns the resampler's tail and the
    last partial chunk.
    """

    CHUNK = 640  # 20 ms

    def __init__(self) -> None:
        import av  # lazily: only WebRTC ingest needs PyAV, and it is slow to import

        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        self._pending = bytearray()

    def convert(self, frame: Any) -> bytes:
        """PCM for one decoded frame: zero or more whole chunks (the rest is held)."""
        self._take(self._resampler.resample(frame))
        whole = len(self._pending) - len(self._pending) % self.CHUNK
        out = bytes(self._pending[:whole])
        del self._pending[:whole]
        return out

    def flush(self) -> bytes:
        """Everything still held: the filter's delayed samples and the partial chunk."""
        self._take(self._resampler.resample(None))
        out = bytes(self._pending)
        self._pending.clear()
        return out

    def _take(self, frames: list[Any]) -> None:
        for f in frames:
            # The plane is padded to an alignment; only samples * 2 bytes are audio.
            self._pending += bytes(f.planes[0])[: f.samples * 2]
