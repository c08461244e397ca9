"""Diarization error rate and speed of the diarizers on the synthetic multi-voice
recordings (``mcustt.testing.diarizer``: espeak-ng voices, overlapping lines).

Usage::

    .venv/bin/python scripts/bench_diarization.py [--long-minutes 10] [--check-mel]

Needs the ``mcustt[diarization]`` extra (``scripts/install --test``) and espeak-ng.
For each recording: its length, speakers (reference / found), overlapping speech, the
diarization error rate with no collar and with NIST's 250 ms collar (missed, false
alarm, confusion in seconds), and the wall time per audio minute, on one core (the
model runs with one torch thread). The first mono file of a process also pays the
model's load: shown apart, as "cold start". ``--long-minutes`` also times a long file
(the four-voice meeting looped, with a different order of lines each time), which goes
through the sampled clustering past 1,500 windows. ``--check-mel`` compares the
encoder's input with resemblyzer's own ``wav_to_mel_spectrogram`` (librosa, which
compiles with numba on first use: slow once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcustt.config import Settings
from mcustt.diarization import Diarizer, Turn, load_diarizer
from mcustt.diarization.der import DERResult, diarization_error_rate
from mcustt.testing.diarizer import (
    INTERVIEW,
    MEETING_3,
    MEETING_4,
    Conversation,
    Line,
    conversation,
)

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def standup() -> Conversation:
    with wave.open(str(FIXTURES / "standup_en.wav")) as w:
        pcm = w.readframes(w.getnframes())
    turns = json.loads((FIXTURES / "standup_en.json").read_text())["turns"]
    reference = [
        Turn(t["speaker"], round(t["start_s"] * 1000), round(t["end_s"] * 1000)) for t in turns
    ]
    return Conversation("standup_en (2 voices)", pcm, reference, None)


def long_meeting(minutes: float) -> Conversation:
    rng = random.Random(7)
    lines: list[Line] = []
    while sum(len(line.text) for line in lines) / 14.0 < minutes * 60:  # ~14 chars/s
        block = list(MEETING_4)
        rng.shuffle(block)
        lines += block
    return conversation(f"meeting4 looped (~{minutes:g} min)", lines)


async def run(
    diarizer: Diarizer, c: Conversation, stereo: bool = False
) -> tuple[list[Turn], float]:
    started = time.perf_counter()
    turns = await diarizer.diarize(c.pcm, channels=c.channels if stereo else None)
    return turns, time.perf_counter() - started


def row(name: str, c: Conversation, turns: list[Turn], seconds: float) -> str:
    plain: DERResult = diarization_error_rate(c.reference, turns)
    collar = diarization_error_rate(c.reference, turns, collar_ms=250)
    found = len({t.speaker for t in turns})
    per_minute = seconds / (c.duration_s / 60)
    return (
        f"| {name} | {c.duration_s:.1f} s | {c.speakers} / {found} | {c.overlap_s:.1f} s "
        f"| {plain.der:.3f} | {collar.der:.3f} "
        f"| {collar.missed_s:.2f} / {collar.false_alarm_s:.2f} / {collar.confusion_s:.2f} "
        f"| {per_minute:.2f} s |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--check-mel", action="store_true")
    args = parser.parse_args()

    diarizer = load_diarizer(Settings(diarizer="resemblyzer"))
    if not diarizer.available:
        sys.exit(f"resemblyzer unavailable: {diarizer.unavailable_reason}")
    meeting3 = conversation("meeting3 (3 voices)", MEETING_3)
    meeting4 = conversation("meeting4 (4 voices)", MEETING_4)
    interview = conversation("interview (2 voices, stereo)", INTERVIEW, stereo=True)
    cases = [standup(), meeting3, meeting4, interview]

    started = time.perf_counter()
    await diarizer.diarize(meeting3.pcm[: 16000 * 2 * 2])
    cold = time.perf_counter() - started

    print(
        "| recording | length | speakers (ref / found) | overlap | DER | DER (250 ms collar) "
        "| missed / false alarm / confusion (s, collar) | time per audio minute |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c in cases:
        turns, seconds = await run(diarizer, c)
        print(row(f"{c.name}, mono", c, turns, seconds))
    turns, seconds = await run(diarizer, interview, stereo=True)
    print(row(f"{interview.name}, by channel", interview, turns, seconds))
    if args.long_minutes > 0:
        long = long_meeting(args.long_minutes)
        turns, seconds = await run(diarizer, long)
        print(row(long.name, long, turns, seconds))
    print(f"\ncold start (imports and model load, once per process): {cold:.1f} s")

    if args.check_mel:
        import warnings

        import numpy as np

        from mcustt.diarization.embedding import mel_spectrogram
        from mcustt.diarization.resemblyzer import load_encoder

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from resemblyzer import wav_to_mel_spectrogram

        wav = (np.random.default_rng(7).standard_normal(48000) * 0.1).astype(np.float32)
        ours = mel_spectrogram(load_encoder(), wav)
        theirs = wav_to_mel_spectrogram(wav)
        print(
            f"mel spectrogram vs resemblyzer's: shapes {ours.shape} {theirs.shape}, "
            f"max abs difference {float(np.abs(ours - theirs).max()):.2e} "
            f"(values up to {float(np.abs(theirs).max()):.2f})"
        )


if __name__ == "__main__":
    asyncio.run(main())
