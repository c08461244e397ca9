"""Noisy versions of the speech fixtures, for the noise-reduction tests and
``scripts/bench_denoise.py`` (pure Python: no numpy in the server's dependencies).

Noise is white or pink (Paul Kellet's filter over white noise, -3 dB an octave, the
shape of fans and room rumble), seeded, scaled so that the mix has the asked SNR: the
speech power is measured over the fixture's spoken turns (its ``.json``), so pauses do
not dilute it.
"""

from __future__ import annotations

import json
import math
import random
import sys
from array import array
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
RATE = 16_000


def load(name: str) -> tuple[array[int], dict[str, Any]]:
    """The fixture's samples and its metadata (``turns`` with ``start_s``/``end_s``)."""
    import wave

    with wave.open(str(FIXTURES / f"{name}.wav"), "rb") as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (RATE, 2, 1)
        samples = array("h", w.readframes(w.getnframes()))
    if sys.byteorder != "little":
        samples.byteswap()
    meta: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return samples, meta


def speech_spans(meta: dict[str, Any]) -> list[tuple[int, int]]:
    """The spoken turns, in samples."""
    return [(int(t["start_s"] * RATE), int(t["end_s"] * RATE)) for t in meta["turns"]]


def gaps(meta: dict[str, Any], n: int, margin_s: float = 0.15) -> list[tuple[int, int]]:
    """Where nobody speaks (a margin off each turn), at least 0.2 s long, in samples."""
    out, pos, m = [], 0, int(margin_s * RATE)
    for a, b in [*speech_spans(meta), (n, n)]:
        if a - m - pos >= RATE // 5:
            out.append((pos, a - m))
        pos = b + m
    return out


def power(x: array[int] | list[float], spans: list[tuple[int, int]]) -> float:
    total, count = 0.0, 0
    for a, b in spans:
        total += math.fsum(v * v for v in x[a:b])
        count += b - a
    return total / max(1, count)


def db(p: float) -> float:
    return 10 * math.log10(max(p, 1e-9))


def noise(n: int, kind: str, seed: int = 1) -> list[float]:
    """``n`` samples of unit-power white or pink noise."""
    rnd = random.Random(seed)
    white = [rnd.gauss(0.0, 1.0) for _ in range(n)]
    if kind == "white":
        return white
    if kind != "pink":
        raise ValueError(kind)
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = 0.0
    out = []
    for w in white:
        b0 = 0.99886 * b0 + w * 0.0555179
        b1 = 0.99332 * b1 + w * 0.0750759
        b2 = 0.96900 * b2 + w * 0.1538520
        b3 = 0.86650 * b3 + w * 0.3104856
        b4 = 0.55000 * b4 + w * 0.5329522
        b5 = -0.7616 * b5 - w * 0.0168980
        out.append(b0 + b1 + b2 + b3 + b4 + b5 + b6 + w * 0.5362)
        b6 = w * 0.115926
    scale = 1 / math.sqrt(math.fsum(v * v for v in out) / n)
    return [v * scale for v in out]


def mix(name: str, snr_db: float, kind: str, seed: int = 1) -> tuple[bytes, bytes]:
    """(clean PCM16, noisy PCM16) of a fixture, the noise at ``snr_db`` below its speech."""
    clean, meta = load(name)
    p_speech = power(clean, speech_spans(meta))
    gain = math.sqrt(p_speech / 10 ** (snr_db / 10))
    noisy = array(
        "h",
        (
            max(-32768, min(32767, round(s + gain * v)))
            for s, v in zip(clean, noise(len(clean), kind, seed), strict=True)
        ),
    )
    return to_bytes(clean), to_bytes(noisy)


def to_bytes(x: array[int]) -> bytes:
    if sys.byteorder != "little":
        x = array("h", x)
        x.byteswap()
    return x.tobytes()


def samples(pcm: bytes) -> array[int]:
    x = array("h", pcm)
    if sys.byteorder != "little":
        x.byteswap()
    return x


def vad_speech_s(pcm: bytes, aggressiveness: int = 2) -> float:
    """Seconds webrtcvad calls speech, in the 20 ms frames the pipeline's VAD uses."""
    import webrtcvad

    from mcustt.vad import FRAME_BYTES

    vad = webrtcvad.Vad(aggressiveness)
    frames = len(pcm) // FRAME_BYTES
    hits = sum(
        bool(vad.is_speech(pcm[i * FRAME_BYTES : (i + 1) * FRAME_BYTES], RATE))
        for i in range(frames)
    )
    return hits * FRAME_BYTES / 2 / RATE
