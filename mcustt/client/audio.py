"""Audio for the producer: the wire format (PCM16, 16 kHz, mono, 20 ms frames), files
read or decoded into it with PyAV (FFmpeg), and real-time pacing of the frames."""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

__all__ = [
    "BYTES_PER_SECOND",
    "FRAME_BYTES",
    "FRAME_MS",
    "SAMPLE_RATE",
    "Pacer",
    "audio_duration",
    "decode_audio",
    "file_chunks",
    "read_wav",
]

SAMPLE_RATE = 16_000
BYTES_PER_SECOND = SAMPLE_RATE * 2
FRAME_MS = 20
FRAME_BYTES = BYTES_PER_SECOND * FRAME_MS // 1000  # 640: the contract's ideal frame


def read_wav(path: str | Path) -> bytes:
    """The PCM16 16 kHz mono samples of a WAV file in that format (else decoded and
    resampled with PyAV)."""
    with wave.open(str(path), "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getcomptype()) == (
            SAMPLE_RATE,
            1,
            2,
            "NONE",
        ):
            return w.readframes(w.getnframes())
    return b"".join(decode_audio(path))


def _native_wav(path: Path) -> bool:
    """Whether the file is a WAV already in the wire format (no decoding needed)."""
    try:
        with wave.open(str(path), "rb") as w:
            return (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2)
    except (wave.Error, EOFError):
        return False


def decode_audio(path: str | Path, *, chunk_seconds: float = 1.0) -> Iterator[bytes]:
    """Decode the first audio stream of any file PyAV (FFmpeg) reads — wav, mp3, ogg,
    m4a, a video's soundtrack… — to PCM16 16 kHz mono, in chunks of about
    ``chunk_seconds``. Blocking: run it in a thread from async code."""
    import av  # lazily: PyAV is slow to import and only file sources need it

    want = max(FRAME_BYTES, int(chunk_seconds * BYTES_PER_SECOND) // 2 * 2)
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        pending = bytearray()

        def take(frames: list[Any]) -> None:
            for f in frames:
                # The plane is padded to an alignment; only samples * 2 bytes are audio.
                pending.extend(bytes(f.planes[0])[: f.samples * 2])

        for frame in container.decode(stream):
            take(resampler.resample(frame))
            while len(pending) >= want:
                yield bytes(pending[:want])
                del pending[:want]
        take(resampler.resample(None))  # the resampler's delayed tail
        if pending:
            yield bytes(pending)


def audio_duration(path: str | Path) -> float | None:
    """The duration in seconds of an audio/video file, when its container says."""
    path = Path(path)
    if _native_wav(path):
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / w.getframerate()
    try:
        import av  # lazily, as in decode_audio

        with av.open(str(path)) as container:
            if container.duration is not None:
                return float(container.duration) / 1_000_000  # AV_TIME_BASE units
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except Exception:  # any unreadable file: the duration is simply unknown
        return None
    return None


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A file's PCM, read (WAV) or decoded (anything else) off the event loop."""
    if _native_wav(path):
        pcm = await asyncio.to_thread(read_wav, path)
        for offset in range(0, len(pcm), BYTES_PER_SECOND):
            yield pcm[offset : offset + BYTES_PER_SECOND]
        return
    chunks = decode_audio(path)
    done = object()
    while True:
        chunk = await asyncio.to_thread(next, chunks, done)
        if chunk is done:
            return
        yield cast(bytes, chunk)


class Pacer:
    """Real-time pacing: frame n is due n * 20 ms after the first, like a live source."""

    def __init__(self) -> None:
        self._clock: float | None = None  # when frame 0 was due
        self._paced = 0  # frames sent since the clock was set

    async def wait(self) -> None:
        """Sleep until the next frame is due."""
        now = time.monotonic()
        if self._clock is None:
            self._clock, self._paced = now, 0
        due = self._clock + self._paced * FRAME_MS / 1000
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 1.0:
            # Far behind (a reconnect, a stall): restart the clock instead of bursting.
            self._clock, self._paced = now, 0

    def sent(self) -> None:
        """Count a frame sent."""
        self._paced += 1
