"""PCM to OGG/Opus with PyAV (FFmpeg's libopus): what an engine that makes raw audio
hands back. CPU work: callers run it in a thread."""

from __future__ import annotations

import io
import struct

import av

#: Opus runs at 48 kHz whatever the input; speech at this bitrate is clear and small.
OPUS_RATE = 48_000
BIT_RATE = 32_000


class BadWav(ValueError):
    """Bytes that are not a PCM16 WAV stream."""


def parse_wav(data: bytes) -> tuple[bytes, int, int]:
    """``(pcm16 samples, rate, channels)`` of a RIFF/WAVE stream.

    Written for a streaming writer (espeak-ng on a pipe) whose header sizes are
    placeholders: the ``data`` chunk runs to the end of the bytes, whatever it claims.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise BadWav("not a RIFF/WAVE stream")
    pos = 12
    rate = channels = 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise BadWav("truncated fmt chunk")
            fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body : body + 16])
            if fmt != 1 or bits != 16 or channels < 1 or rate < 1:
                raise BadWav(f"not PCM16 (format {fmt}, {bits} bits, {channels} channels)")
        elif chunk == b"data":
            if not rate:
                raise BadWav("data before fmt")
            pcm = data[body:]
            return pcm[: len(pcm) - len(pcm) % (2 * channels)], rate, channels
        pos = body + size + (size & 1)
    raise BadWav("no data chunk")


def encode_ogg_opus(pcm: bytes, rate: int, channels: int = 1) -> bytes:
    """PCM16 (interleaved) at ``rate`` as a mono OGG/Opus file."""
    layout = "mono" if channels == 1 else "stereo"
    if channels > 2:
        raise BadWav(f"{channels} channels: expected mono or stereo")
    out = io.BytesIO()
    with av.open(out, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=OPUS_RATE)
        stream.layout = "mono"
        stream.bit_rate = BIT_RATE
        resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        # Fed in one-second frames: the resampler and encoder buffer across them.
        step = rate * 2 * channels
        for start in range(0, len(pcm), step):
            chunk = pcm[start : start + step]
            frame = av.AudioFrame(format="s16", layout=layout, samples=len(chunk) // (2 * channels))
            frame.planes[0].update(chunk)
            frame.sample_rate = rate
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    container.mux(packet)
        for resampled in resampler.resample(None):
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def is_ogg_opus(data: bytes) -> bool:
    """An Ogg stream whose first packet is an Opus header (what a player checks first)."""
    return data[:4] == b"OggS" and b"OpusHead" in data[:128]
