"""Diarization error rate (DER), as NIST's md-eval and pyannote.metrics define it,
written out in plain Python (pyannote.metrics would pull pandas and more for one sum).

Over 10 ms frames, with ``ref`` speakers of the reference and ``hyp`` of the hypothesis
talking in a frame (either may hold several at once: overlapping speech)::

    missed      = max(0, ref - hyp)
    false alarm = max(0, hyp - ref)
    confusion   = min(ref, hyp) - (reference speakers matched by their mapped speaker)
    DER         = (missed + false alarm + confusion) / (reference speech)

where "reference speech" counts a frame once per reference speaker talking, and the
mapping from hypothesis to reference speakers is the one-to-one mapping that matches
the most time (found by trying every mapping: files have a handful of speakers). A
``collar`` (NIST uses 0.25 s) leaves out the frames that close to any reference turn
boundary, where the reference itself is uncertain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import permutations

from mcustt.diarization.base import Turn

STEP_MS = 10
#: beyond this many speakers on both sides, the mapping is found greedily
_EXACT_UP_TO = 7


@dataclass(frozen=True, slots=True)
class DERResult:
    der: float
    missed_s: float
    false_alarm_s: float
    confusion_s: float
    #: the reference speech scored (after the collar), speaker-seconds
    total_s: float
    #: hypothesis speaker → reference speaker
    mapping: dict[str, str]


def _frames(turns: Iterable[Turn], n: int) -> list[set[str]]:
    active: list[set[str]] = [set() for _ in range(n)]
    for turn in turns:
        for i in range(max(0, turn.start_ms // STEP_MS), min(n, turn.end_ms // STEP_MS)):
            active[i].add(turn.speaker)
    return active


def _best_mapping(
    overlap: dict[tuple[str, str], int], hyps: list[str], refs: list[str]
) -> dict[str, str]:
    if not hyps or not refs:
        return {}
    if min(len(hyps), len(refs)) > _EXACT_UP_TO:
        mapping: dict[str, str] = {}
        for (h, r), _ in sorted(overlap.items(), key=lambda kv: -kv[1]):
            if h not in mapping and r not in mapping.values():
                mapping[h] = r
        return mapping
    best: dict[str, str] = {}
    best_score = -1
    if len(hyps) <= len(refs):
        for chosen in permutations(refs, len(hyps)):
            score = sum(overlap.get((h, r), 0) for h, r in zip(hyps, chosen, strict=True))
            if score > best_score:
                best_score, best = score, dict(zip(hyps, chosen, strict=True))
    else:
        for chosen in permutations(hyps, len(refs)):
            score = sum(overlap.get((h, r), 0) for h, r in zip(chosen, refs, strict=True))
            if score > best_score:
                best_score, best = score, dict(zip(chosen, refs, strict=True))
    return best


def diarization_error_rate(
    reference: Sequence[Turn], hypothesis: Sequence[Turn], *, collar_ms: int = 0
) -> DERResult:
    """Score ``hypothesis`` against ``reference`` (speaker names need not agree)."""
    end = max((t.end_ms for t in [*reference, *hypothesis]), default=0)
    n = end // STEP_MS + 1
    ref, hyp = _frames(reference, n), _frames(hypothesis, n)
    scored = [True] * n
    if collar_ms > 0:
        reach = collar_ms // STEP_MS
        for turn in reference:
            for edge in (turn.start_ms // STEP_MS, turn.end_ms // STEP_MS):
                for i in range(max(0, edge - reach), min(n, edge + reach)):
                    scored[i] = False
    overlap: dict[tuple[str, str], int] = {}
    for i in range(n):
        if scored[i]:
            for h in hyp[i]:
                for r in ref[i]:
                    overlap[(h, r)] = overlap.get((h, r), 0) + 1
    mapping = _best_mapping(
        overlap, sorted({t.speaker for t in hypothesis}), sorted({t.speaker for t in reference})
    )
    missed = false_alarm = confusion = total = 0
    for i in range(n):
        if not scored[i]:
            continue
        n_ref, n_hyp = len(ref[i]), len(hyp[i])
        correct = sum(1 for h in hyp[i] if mapping.get(h) in ref[i])
        total += n_ref
        missed += max(0, n_ref - n_hyp)
        false_alarm += max(0, n_hyp - n_ref)
        confusion += min(n_ref, n_hyp) - correct
    seconds = STEP_MS / 1000
    errors = missed + false_alarm + confusion
    return DERResult(
        der=errors / total if total else (0.0 if errors == 0 else 1.0),
        missed_s=missed * seconds,
        false_alarm_s=false_alarm * seconds,
        confusion_s=confusion * seconds,
        total_s=total * seconds,
        mapping=mapping,
    )
