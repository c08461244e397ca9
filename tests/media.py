"""Audio files in other formats than the fixtures' 16 kHz mono WAV, made with PyAV."""

from __future__ import annotations

import wave
from pathlib import Path

import av


def encode(src: Path, dst: Path, codec: str, rate: int, layout: str = "stereo") -> Path:
    """Re-encode a 16 kHz mono fixture (e.g. to 44.1 kHz stereo mp3) with PyAV."""
    with wave.open(str(src)) as w:
        pcm = w.readframes(w.getnframes())
    with av.open(str(dst), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream), codec  # an audio codec name
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=rate)
        step = 3200
        for i in range(0, len(pcm), step):
            chunk = pcm[i : i + step]
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(chunk) // 2)
            frame.sample_rate = 16000
            frame.planes[0].update(chunk)
            frame.pts = i // 2
            for f in resampler.resample(frame):
                for packet in stream.encode(f):
                    out.mux(packet)
        for f in resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst
