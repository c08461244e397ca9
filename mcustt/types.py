"""Type aliases shared across the package (one tiny module, as in Starlette)."""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = dict[str, Any]
#: Raw audio: PCM signed 16-bit little-endian, 16 kHz, mono.
PCM16: TypeAlias = bytes

SAMPLE_RATE = 16_000
BYTES_PER_SAMPLE = 2
BYTES_PER_MS = SAMPLE_RATE * BYTES_PER_SAMPLE // 1000  # 32


def pcm_ms(pcm: bytes | int) -> int:
    """Duration in milliseconds of PCM16 16 kHz mono audio (bytes or a byte count)."""
    n = pcm if isinstance(pcm, int) else len(pcm)
    return n // BYTES_PER_MS
