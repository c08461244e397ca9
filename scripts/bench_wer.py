"""Streaming WER vs the same engine decoding the whole file at once (issue 17).

Usage (from the repo root)::

    .venv/bin/python scripts/bench_wer.py                 # the shared English fixtures
    .venv/bin/python scripts/bench_wer.py --fixtures hello_en,standup_en

For each fixture (``tests/fixtures/<name>.wav|json``, English, 16 kHz mono):

* **streaming**: the audio goes through the real :class:`mcustt.pipeline.SessionPipeline`
  (the live VAD and endpointing, one sphinx stream per utterance, exactly the settings
  ``mcustt serve`` uses) in 20 ms frames, faster than real time (the result does not
  depend on the pace: batching is by audio length and each final is awaited before the
  next utterance starts); the finals are joined;
* **offline**: the same engine (pocketsphinx with the server's ``DECODER_OPTIONS``)
  decodes the whole file as one utterance (``full_utt``: batch cepstral mean over the
  file), the ceiling a streaming pipeline is compared against;
* **offline+passes**: the same, with pocketsphinx's second (fwdflat) and lattice
  (bestpath) passes on, which the server leaves off for a fast ``end_utt``.

WER = (substitutions + deletions + insertions) / reference words, on lower-cased words
with punctuation removed (so a punctuating post-processor does not count). Also printed:
the finals per fixture and the median words per final (the endpointing must not cut
sentences into fragments).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import statistics
import sys
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "fixtures"
ENGLISH = ("hello_en", "pause_en", "standup_en")


def load(name: str) -> tuple[bytes, dict[str, Any]]:
    with wave.open(str(FIXTURES / f"{name}.wav"), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        pcm = w.readframes(w.getnframes())
    meta: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return pcm, meta


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(ref: str, hyp: str) -> float:
    r = words(ref)
    return edit_distance(r, words(hyp)) / max(1, len(r))


@dataclass
class Streamed:
    finals: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.finals)

    def words_per_final(self) -> list[int]:
        return [len(words(f)) for f in self.finals]


async def stream(name: str) -> Streamed:
    """The fixture through a real SessionPipeline with a fresh sphinx pool."""
    from mcustt.config import Settings
    from mcustt.recognizers.sphinx import SphinxRecognizer
    from mcustt.testing.streamed import stream_finals

    pcm, _ = load(name)
    # The server's settings (MCUSTT_ENDPOINT_* and all), one worker: deterministic.
    settings = dataclasses.replace(Settings.from_env(), recognizer_workers=1)
    recognizer = SphinxRecognizer(settings)
    await recognizer.start()
    try:
        finals = await stream_finals(pcm, recognizer, settings, session_id="s_bench_wer")
    finally:
        await recognizer.aclose()
    return Streamed(finals)


def offline(name: str, *, passes: bool) -> str:
    """The whole file decoded as one utterance, in this process."""
    from pocketsphinx import Decoder

    from mcustt.recognizers.sphinx.worker import DECODER_OPTIONS

    pcm, _ = load(name)
    options = dict(DECODER_OPTIONS)
    if passes:
        options.update(fwdflat=True, bestpath=True)
    decoder = Decoder(**options)
    decoder.start_utt()
    decoder.process_raw(pcm, False, True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return str(hyp.hypstr) if hyp is not None else ""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--fixtures", default=",".join(ENGLISH))
    parser.add_argument("-v", "--verbose", action="store_true", help="print the texts")
    args = parser.parse_args()
    names = [n for n in args.fixtures.split(",") if n]
    os.environ.setdefault("MCUSTT_LOG_LEVEL", "warning")

    rows: list[list[str]] = []
    all_wpf: list[int] = []
    tot = {"ref": 0, "s": 0.0, "o": 0.0, "p": 0.0}
    for name in names:
        _, meta = load(name)
        ref = str(meta["text"])
        streamed = await stream(name)
        off = offline(name, passes=False)
        off_passes = offline(name, passes=True)
        s, o, p = wer(ref, streamed.text), wer(ref, off), wer(ref, off_passes)
        n = len(words(ref))
        tot["ref"] += n
        tot["s"] += s * n
        tot["o"] += o * n
        tot["p"] += p * n
        wpf = streamed.words_per_final()
        all_wpf += wpf
        rows.append(
            [
                name,
                str(n),
                f"{s:.3f}",
                f"{o:.3f}",
                f"{s - o:+.3f}",
                f"{p:.3f}",
                str(len(streamed.finals)),
                f"{statistics.median(wpf) if wpf else 0:.1f}",
            ]
        )
        if args.verbose:
            print(f"--- {name}\nref:       {ref}\nstreaming: {streamed.finals}\noffline:   {off}")
            print(f"offline+passes: {off_passes}")
    total = max(1, tot["ref"])
    rows.append(
        [
            "all",
            str(tot["ref"]),
            f"{tot['s'] / total:.3f}",
            f"{tot['o'] / total:.3f}",
            f"{(tot['s'] - tot['o']) / total:+.3f}",
            f"{tot['p'] / total:.3f}",
            str(len(all_wpf)),
            f"{statistics.median(all_wpf) if all_wpf else 0:.1f}",
        ]
    )
    headers = [
        "fixture",
        "words",
        "streaming WER",
        "offline WER",
        "stream-offline",
        "offline+passes",
        "finals",
        "median words/final",
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("engine: pocketsphinx (MCUSTT_RECOGNIZER=sphinx), server decoder options")
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    asyncio.run(main())
