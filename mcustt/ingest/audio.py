"""Audio frame rules of the contract (§4), shared by the ingest adapters."""

from __future__ import annotations

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
