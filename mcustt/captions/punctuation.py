"""Sentence case and end punctuation for engines that give neither (issue 17).

Pocketsphinx returns lower-case words without punctuation. No PyPI package ships a
punctuation model inside its wheel (the ones that exist fetch weights from a model hub
at run time, which this server must never need), so this is rules, measured by
``scripts/bench_punctuation.py`` against the fixtures' reference text:

* sentence boundaries: a pause of at least :data:`PAUSE_MS` between two words of a final
  (word timings, when the engine gives them), and the end of every final;
* a sentence starts with a capital and, in a final, ends with ``?`` when it opens like
  an English question (an auxiliary followed by a subject: "do we", "is it", "can
  you"; "why", "who", "which"; "what"/"how"/"when"/"where" followed by an auxiliary),
  else ``.``; interims get the casing only (a mark would flicker as they grow);
* "I", "I'm", "I'll", "I've", "I'd", weekdays and months (English), and the session's
  keywords (any language) get their case.

Only the case of letters changes and marks are appended: never a word added, removed
or changed, so a WER computed on words is the same before and after.
"""

from __future__ import annotations

from collections.abc import Sequence

from mcustt.captions.profanity import split_token


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


#: a silence this long between two words of a final is a sentence boundary (ms). Tuned
#: on the fixtures (espeak pauses ~350+ ms at a full stop, ~100-200 ms at a comma).
PAUSE_MS = 280

_AUX = _set(
    """
    do does did is are was were am can could will would should shall may might must
    have has had isn't aren't wasn't weren't don't doesn't didn't can't couldn't won't
    wouldn't shouldn't haven't hasn't hadn't
    """
)
#: what follows an auxiliary that opens a question ("do we", "is there", "can the…")
_SUBJECTS = _set(
    """
    i you we they he she it this that these those there the a an anyone anybody
    everyone everybody someone somebody anything everything our your my his her their
    its not
    """
)
_DO_OBJECTS = _set("it this that these those not")
#: wh-words that open a question whatever follows
_ALWAYS_WH = frozenset({"why", "who", "whom", "whose", "which"})
#: wh-words that open a question when an auxiliary (or one of these) follows; otherwise
#: they usually start a clause ("when we ship it, …")
_OTHER_WH = {
    "what": frozenset({"about", "if", "else"}),
    "how": frozenset({"many", "much", "long", "about", "often", "far", "come", "soon"}),
    "when": frozenset(),
    "where": frozenset(),
}
#: words that may precede the question proper ("so do we…", "okay what is…")
_LEAD_INS = _set("so and but okay ok well now also then oh um uh hey yeah alright")
#: a tag at the end turns a statement into a question ("…, isn't it")
_TAG_AUX = _set(
    "isn't aren't don't doesn't didn't won't wasn't weren't can't shouldn't wouldn't haven't hasn't"
)
_TAG_SUBJ = _set("it we you they he she there i")
_I_FORMS = {"i": "I", "i'm": "I'm", "i'll": "I'll", "i've": "I've", "i'd": "I'd"}
_NAMES = {
    w: w.capitalize()
    for w in _set(
        "monday tuesday wednesday thursday friday saturday sunday january february "
        "april june july september october november december"
    )
}


def is_question(words: Sequence[str]) -> bool:
    """Whether an English sentence (its words, lower case, no punctuation) reads as
    a question."""
    i = 0
    while i < len(words) - 1 and words[i] in _LEAD_INS:
        i += 1
    if i >= len(words):
        return False
    first = words[i]
    second = words[i + 1] if i + 1 < len(words) else ""
    if first in _ALWAYS_WH:
        return True
    if first in _OTHER_WH:
        return second in _AUX or second in _OTHER_WH[first] or second in ("'s", "is")
    if first in _AUX and second in _SUBJECTS:
        # "do it", "do this", "do not": an imperative, not "does it…?"
        return not (first == "do" and second in _DO_OBJECTS)
    return len(words) >= 4 and words[-2] in _TAG_AUX and words[-1] in _TAG_SUBJ


def _case(core: str, cased: str) -> str:
    """``core`` with the letter case of ``cased`` (same word, any case)."""
    return cased if cased.lower() == core.lower() else core


class Restorer:
    """One session's restoration rules: its language and keywords."""

    def __init__(self, keywords: Sequence[str] = (), *, pause_ms: int = PAUSE_MS) -> None:
        self.pause_ms = pause_ms
        phrases: dict[tuple[str, ...], tuple[str, ...]] = {}
        for phrase in keywords:
            parts = tuple(split_token(w)[1] for w in phrase.split())
            # only keywords with capitals say something about case ("mcustt" does not)
            if parts and all(parts) and any(c.isupper() for c in phrase):
                phrases.setdefault(tuple(p.lower() for p in parts), parts)
        self._phrases = phrases
        self._longest = max((len(k) for k in phrases), default=0)

    def restore(
        self,
        tokens: Sequence[str],
        gaps: Sequence[int | None] | None,
        *,
        final: bool,
        lang: str,
    ) -> list[str]:
        """``tokens`` recased and punctuated. ``gaps[i]``: the silence between token i
        and i+1 in ms (None: unknown)."""
        n = len(tokens)
        if n == 0:
            return []
        parts = [list(split_token(t)) for t in tokens]
        lower = [p[1].lower().replace("\u2019", "'") for p in parts]
        english = lang.lower().startswith("en")
        # 1. words whose case is known
        i = 0
        while i < n:
            for size in range(min(self._longest, n - i), 0, -1):
                cased = self._phrases.get(tuple(lower[i : i + size]))
                if cased is not None:
                    for j in range(size):
                        parts[i + j][1] = _case(parts[i + j][1], cased[j])
                    i += size
                    break
            else:
                if english:
                    known = _I_FORMS.get(lower[i]) or _NAMES.get(lower[i])
                    if known is not None:
                        parts[i][1] = _case(parts[i][1], known)
                i += 1
        # 2. sentences: split at long pauses
        starts = [0]
        if gaps is not None:
            starts += [
                k + 1 for k, g in enumerate(gaps[: n - 1]) if g is not None and g >= self.pause_ms
            ]
        bounds = list(zip(starts, [*starts[1:], n], strict=True))
        for a, b in bounds:
            core = parts[a][1]
            if core[:1].islower():
                parts[a][1] = core[0].upper() + core[1:]
            if not final:
                continue
            last = parts[b - 1]
            if last[2] or not last[1]:
                continue  # the engine's own mark (or a bare symbol): keep it
            question = english and is_question(lower[a:b])
            last[2] = "?" if question else "."
        return ["".join(p) for p in parts]
