"""Measure noise reduction (issue 15): WER, VAD and CPU with and without the suppressor.

Usage::

    .venv/bin/python scripts/bench_denoise.py [--fixtures standup_en,pause_en,hello_en]
        [--snr 5,10] [--noise white,pink] [--seed 1]

Each fixture is mixed with seeded white or pink noise at each SNR (``tests/noisy.py``:
the speech power is taken over the fixture's spoken turns). For every condition,
without and with the suppressor (``mcustt.denoise.make_suppressor``, the whole
recording through one stream, aligned):

* ``VAD speech s``: what webrtcvad, at the pipeline's aggressiveness (2) and 20 ms
  frames, calls speech, summed over the fixtures; the ``clean`` row is the reference;
* ``utts`` / ``utt s``: the utterances the pipeline's segmenter (``mcustt.vad``, its
  defaults as the server runs it: 30 s cut) makes, and their total length (what a paid
  engine would bill);
* ``WER``: pocketsphinx with the server's decoder options (a fresh decoder per row, so
  rows do not depend on each other) on those utterances, against the fixtures' text;
  word errors over all reference words. pocketsphinx is weak on these synthetic voices
  (WER ~0.8 on the clean audio), so read the differences, not the level;
* ``CPU``: the suppressor's process time per second of audio (one stream), and how
  many streams one core would carry at that rate. A second line times the live path:
  100 ms batches through ``asyncio.to_thread`` as the session pipeline sends them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import noisy  # tests/noisy.py: the same noisy fixtures as the tests

from mcustt.denoise import make_suppressor
from mcustt.recognizers.sphinx.worker import DECODER_OPTIONS
from mcustt.vad import Audio, End, Segmenter, Start


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def edits(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, row = row, [i] + [0] * len(hyp)
        for j in range(1, len(hyp) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ref[i - 1] != hyp[j - 1]))
    return row[-1]


def utterances(pcm: bytes) -> list[bytes]:
    seg = Segmenter(aggressiveness=2, max_ms=30_000)
    out: list[bytes] = []
    cur = bytearray()
    for ev in [*seg.feed(pcm), *seg.flush()]:
        if isinstance(ev, Start):
            cur = bytearray(ev.preroll)
        elif isinstance(ev, Audio):
            cur += ev.pcm
        elif isinstance(ev, End):
            out.append(bytes(cur))
    return out


def recognize(decoder: Any, utts: list[bytes]) -> list[str]:
    out: list[str] = []
    for u in utts:
        decoder.start_utt()
        decoder.process_raw(u, False, True)
        decoder.end_utt()
        hyp = decoder.hyp()
        if hyp is not None:
            out += words(hyp.hypstr)
    return out


def row(label: str, pcms: list[bytes], refs: list[list[str]]) -> dict[str, Any]:
    # Imported here: only the bench decodes in-process (the server uses worker processes).
    from pocketsphinx import Decoder

    decoder = Decoder(**DECODER_OPTIONS)
    errors = total = n_utts = utt_bytes = 0
    vad_s = 0.0
    for pcm, ref in zip(pcms, refs, strict=True):
        vad_s += noisy.vad_speech_s(pcm)
        utts = utterances(pcm)
        n_utts += len(utts)
        utt_bytes += sum(len(u) for u in utts)
        errors += edits(ref, recognize(decoder, utts))
        total += len(ref)
    return {
        "label": label,
        "vad_s": vad_s,
        "utts": n_utts,
        "utt_s": utt_bytes / 32_000,
        "wer": errors / total,
    }


async def live_path_cpu(pcm: bytes) -> float:
    """CPU seconds of this process per audio second, 100 ms batches via to_thread."""
    s = make_suppressor()
    t0 = time.process_time()
    for i in range(0, len(pcm), 3_200):
        await asyncio.to_thread(s.process, pcm[i : i + 3_200])
    return (time.process_time() - t0) / (len(pcm) / 32_000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", default="standup_en,pause_en,hello_en")
    ap.add_argument("--snr", default="5,10")
    ap.add_argument("--noise", default="white,pink")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("POCKETSPHINX_LOGFILE", os.devnull)
    names = args.fixtures.split(",")
    refs = [words(noisy.load(n)[1]["text"]) for n in names]
    clean = [noisy.mix(n, 100, "white", args.seed)[0] for n in names]
    audio_s = sum(len(p) for p in clean) / 32_000
    rows = [row("clean", clean, refs)]
    cpu: list[float] = []
    for kind in args.noise.split(","):
        for snr in [float(x) for x in args.snr.split(",")]:
            mixed = [noisy.mix(n, snr, kind, args.seed)[1] for n in names]
            rows.append(row(f"{kind} {snr:g} dB, off", mixed, refs))
            t0 = time.process_time()
            denoised = [make_suppressor().process_all(p) for p in mixed]
            cpu.append((time.process_time() - t0) / audio_s)
            rows.append(row(f"{kind} {snr:g} dB, on", denoised, refs))
    live = asyncio.run(
        live_path_cpu(b"".join(noisy.mix(n, 5, "pink", args.seed)[1] for n in names))
    )

    print(f"fixtures: {', '.join(names)} ({audio_s:.1f} s of audio, {sum(map(len, refs))} words)")
    print()
    print("| condition | VAD speech s | utts | utt s | WER |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['label']} | {r['vad_s']:.1f} | {r['utts']} | {r['utt_s']:.1f} | {r['wer']:.2f} |"
        )
    per_s = sum(cpu) / len(cpu)
    print()
    print(
        f"suppressor CPU: {per_s * 1000:.2f} ms per audio second, one stream "
        f"({per_s * 100:.2f} % of a core; ~{1 / per_s:,.0f} streams a core)"
    )
    print(
        f"live path (100 ms batches through asyncio.to_thread): {live * 1000:.2f} ms CPU "
        f"per audio second ({live * 100:.2f} % of a core)"
    )
    print(json.dumps({"rows": rows, "cpu_s_per_audio_s": per_s, "live_cpu_s_per_audio_s": live}))


if __name__ == "__main__":
    main()
