#!/usr/bin/env python3
"""Punctuation and casing restoration (issue 17) against the fixtures' reference text.

Every English fixture (``tests/fixtures/*_en.json``) has a punctuated, cased reference
text in turns. Each turn (what the VAD makes one final of: turns are 0.9 s apart) is
lower-cased and stripped of punctuation, the way pocketsphinx returns it, and given to
:class:`mcustt.captions.Shaper` as a final, in three ways:

* ``text``: words only (no timings: an engine without them);
* ``aligned``: with word timings from pocketsphinx aligning the reference words to the
  turn's audio (so the pause rule sees real speech timing on exactly the right words);
* ``aligned-whole``: the whole file as one final with those timings (a long final, where
  only pauses can find the sentences);
* ``sphinx``: pocketsphinx's own words and timings for the turn (what a session gets),
  scored on the words it got right (aligned to the reference with difflib).

Scores: F1 of sentence ends (a ``.``, ``?`` or ``!`` after a word, whichever), F1 of
question marks, and casing accuracy (a word's case as in the reference; lower-casing
everything scores the ``baseline``). ``--sweep`` prints the ``aligned-whole`` F1 for pause
thresholds 150-700 ms (how :data:`mcustt.captions.punctuation.PAUSE_MS` was chosen).

The rules were tuned on those fixtures, so ``--held-out`` also scores :data:`HELD_OUT`,
meeting turns written after the tuning and never used for it, spoken by espeak-ng
(``text`` and ``aligned`` modes; needs ``espeak-ng`` and numpy).

    .venv/bin/python scripts/bench_punctuation.py [--sweep] [--held-out]
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcustt.captions import Shaper  # noqa: E402
from mcustt.captions.profanity import split_token  # noqa: E402
from mcustt.captions.punctuation import PAUSE_MS  # noqa: E402
from mcustt.recognizers.base import Hypothesis, Word  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
RATE = 16_000
#: written after the rules were tuned; never used to tune them
HELD_OUT = [
    "Thanks for joining. Can everyone hear me? Let us start with the budget.",
    "The numbers look good this quarter. Sales went up by ten percent.",
    "Did the vendor send the contract? I have not seen it yet.",
    "I will check with legal tomorrow. They said it would be ready on Tuesday.",
    "What is the plan for the launch? We need a date soon.",
    "How long will the testing take? About two weeks, I think.",
    "Sarah is handling the design review. She will share the slides by Friday.",
    "Is there anything else? No. Thanks everyone, see you next week.",
]


def bare(text: str) -> list[str]:
    """What pocketsphinx would say: lower case, no punctuation."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def ref_tokens(text: str) -> list[str]:
    return [t for t in text.split() if split_token(t)[1]]


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, ref: bool, hyp: bool) -> None:
        self.tp += ref and hyp
        self.fp += hyp and not ref
        self.fn += ref and not hyp

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(1, 2 * self.tp + self.fp + self.fn)


@dataclass
class Tally:
    ends: Score = field(default_factory=Score)
    questions: Score = field(default_factory=Score)
    cased: int = 0
    baseline: int = 0
    words: int = 0

    def compare(self, ref: str, hyp: str) -> None:
        _, r_core, r_trail = split_token(ref)
        _, h_core, h_trail = split_token(hyp)
        self.ends.add(bool(re.search(r"[.?!]", r_trail)), bool(re.search(r"[.?!]", h_trail)))
        self.questions.add("?" in r_trail, "?" in h_trail)
        self.words += 1
        self.cased += r_core == h_core
        self.baseline += r_core == r_core.lower()

    def row(self, name: str) -> str:
        return (
            f"{name:<17} {self.ends.f1:>9.2f} {self.questions.f1:>11.2f} "
            f"{self.cased / max(1, self.words):>10.1%} {self.baseline / max(1, self.words):>9.1%}"
            f" {self.words:>6}"
        )


def load(name: str) -> tuple[bytes, dict[str, object]]:
    with wave.open(str(FIXTURES / f"{name}.wav")) as w:
        pcm = w.readframes(w.getnframes())
    return pcm, json.loads((FIXTURES / f"{name}.json").read_text())


def turn_audio(pcm: bytes, turn: dict[str, float]) -> bytes:
    # 200 ms of pre-roll like the VAD's, and the turn's end (espeak's tail included)
    a = max(0, int((turn["start_s"] - 0.2) * RATE)) * 2
    b = int(turn["end_s"] * RATE) * 2
    return pcm[a:b]


#: fixture words pocketsphinx's dictionary lacks (alignment needs a pronunciation)
EXTRA_WORDS = {"priya": "P R IY AH"}
_decoders: dict[bool, object] = {}


def decode(pcm: bytes, align: str | None) -> list[Word]:
    from pocketsphinx import Decoder

    from mcustt.recognizers.sphinx.worker import DECODER_OPTIONS, words_of

    decoder = _decoders.get(align is not None)
    if decoder is None:
        # the recognizer's own options (alignment needs the full search)
        options = {"samprate": RATE, "loglevel": "FATAL"} if align else DECODER_OPTIONS
        decoder = _decoders[align is not None] = Decoder(**options)
        if align is not None:
            for word, phones in EXTRA_WORDS.items():
                decoder.add_word(word, phones, True)
    if align is not None:
        decoder.set_align_text(align)  # type: ignore[attr-defined]
    decoder.start_utt()  # type: ignore[attr-defined]
    decoder.process_raw(pcm, full_utt=True)  # type: ignore[attr-defined]
    decoder.end_utt()  # type: ignore[attr-defined]
    segments = decoder.seg()  # type: ignore[attr-defined]
    return [] if segments is None else [Word(w, s, e) for w, s, e in words_of(segments)]


def speak(text: str) -> bytes:
    """espeak-ng's en-us voice, 16 kHz PCM16 (it speaks at 22,050 Hz)."""
    import subprocess

    import numpy as np

    out = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", text], check=True, capture_output=True
    ).stdout
    src = np.frombuffer(out[44:], dtype="<i2").astype(np.float64)  # streamed: no sizes
    n = int(len(src) * RATE / 22_050)
    pcm = np.interp(np.arange(n) * 22_050 / RATE, np.arange(len(src)), src)
    silence = np.zeros(RATE // 2)
    return np.concatenate([silence, pcm, silence]).astype("<i2").tobytes()


def fill(words: list[str], aligned: list[Word]) -> list[Word]:
    """A timing for every word: the aligner's, and for a word it skipped (it sometimes
    drops a turn's last word) the stretch between its neighbours (no pause)."""
    times: list[tuple[int, int] | None] = [None] * len(words)
    matcher = difflib.SequenceMatcher(a=words, b=[w.text for w in aligned], autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            w = aligned[block.b + k]
            times[block.a + k] = (w.start_ms, w.end_ms)
    out: list[Word] = []
    for i, word in enumerate(words):
        t = times[i]
        if t is None:
            start = out[-1].end_ms if out else 0
            nxt = next((x for x in times[i + 1 :] if x is not None), None)
            t = (start, nxt[0] if nxt else start + 200)
        out.append(Word(word, t[0], t[1]))
    return out


def held_out(shaper: Shaper) -> dict[str, Tally]:
    tallies = {"text": Tally(), "aligned": Tally()}
    for text in HELD_OUT:
        ref = ref_tokens(text)
        words = bare(text)
        for r, h in zip(ref, shape(words, None, shaper), strict=True):
            tallies["text"].compare(r, h)
        aligned = fill(words, decode(speak(text), " ".join(words)))
        for r, h in zip(ref, shape(words, aligned, shaper), strict=True):
            tallies["aligned"].compare(r, h)
    return tallies


def shape(words: list[str], timings: list[Word] | None, shaper: Shaper) -> list[str]:
    hyp = Hypothesis(
        " ".join(words),
        True,
        "en-US",
        words=tuple(Word(w, t.start_ms, t.end_ms) for w, t in zip(words, timings, strict=True))
        if timings is not None
        else None,
    )
    return shaper.shape(hyp).text.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="F1 per pause threshold")
    parser.add_argument("--held-out", action="store_true", help="also score HELD_OUT")
    args = parser.parse_args()
    names = sorted(p.stem for p in FIXTURES.glob("*_en.json"))
    shaper = Shaper(punctuates=False, language="en-US")
    tallies = {k: Tally() for k in ("text", "aligned", "aligned-whole", "sphinx")}
    wholes: list[tuple[list[str], list[Word]]] = []
    shaped_words = 0
    shape_s = 0.0
    for name in names:
        pcm, meta = load(name)
        whole_ref: list[str] = []
        whole_timed: list[Word] = []
        for turn in meta["turns"]:  # type: ignore[attr-defined]
            ref = ref_tokens(turn["text"])
            words = bare(turn["text"])
            assert len(words) == len(ref), (ref, words)
            audio = turn_audio(pcm, turn)
            offset = int((turn["start_s"] - 0.2) * 1000)
            t0 = time.perf_counter()
            for r, h in zip(ref, shape(words, None, shaper), strict=True):
                tallies["text"].compare(r, h)
            shape_s += time.perf_counter() - t0
            shaped_words += len(words)
            aligned = decode(audio, " ".join(words))
            if len(aligned) == len(words):
                for r, h in zip(ref, shape(words, aligned, shaper), strict=True):
                    tallies["aligned"].compare(r, h)
                whole_ref += ref
                whole_timed += [
                    Word(w.text, w.start_ms + offset, w.end_ms + offset) for w in aligned
                ]
            else:
                print(f"{name}: alignment failed for {turn['text']!r}", file=sys.stderr)
            got = decode(audio, None)
            if got:
                hyp = shape([w.text for w in got], got, shaper)
                matcher = difflib.SequenceMatcher(
                    a=[split_token(t)[1].lower() for t in ref],
                    b=[split_token(t)[1].lower() for t in hyp],
                    autojunk=False,
                )
                for block in matcher.get_matching_blocks():
                    for k in range(block.size):
                        tallies["sphinx"].compare(ref[block.a + k], hyp[block.b + k])
        wholes.append((whole_ref, whole_timed))
        for ref_w, timed in [wholes[-1]]:
            for r, h in zip(ref_w, shape(bare(" ".join(ref_w)), timed, shaper), strict=True):
                tallies["aligned-whole"].compare(r, h)
    print(f"fixtures: {', '.join(names)}; pause threshold {PAUSE_MS} ms")
    print(
        f"{'mode':<17} {'ends F1':>9} {'question F1':>11} {'casing':>10} {'baseline':>9} {'words':>6}"
    )
    for key, tally in tallies.items():
        print(tally.row(key))
    if args.held_out:
        for key, tally in held_out(shaper).items():
            print(tally.row(f"held-out {key}"))
    print(f"speed: {shaped_words / max(shape_s, 1e-9):,.0f} words/s on one core (text mode)")
    if args.sweep:
        print("pause ms  aligned-whole ends F1")
        for pause in range(150, 701, 50):
            sweep = Shaper(punctuates=False, language="en-US")
            assert sweep.restorer is not None
            sweep.restorer.pause_ms = pause
            tally = Tally()
            for ref_w, timed in wholes:
                for r, h in zip(ref_w, shape(bare(" ".join(ref_w)), timed, sweep), strict=True):
                    tally.compare(r, h)
            print(f"{pause:>8}  {tally.ends.f1:.2f}")


if __name__ == "__main__":
    main()
