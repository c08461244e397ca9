"""The profanity filter (issue 17): ``off``, ``mask`` (``f***``) or ``remove``.

The word list is better-profanity's, read from its wheel (``profanity_wordlist.txt``: no
download, no leetspeak expansion: recognizers spell words, they do not write ``f4nny``),
less the everyday words it also lists (``kill``, ``organ``, ``pot``, ``stroke``…) that
would mask ordinary meeting speech. A word matches case-insensitively, bare or with a
plain inflection (``-s``, ``-es``, ``-ed``, ``-ing``, ``-er``, ``-ers``); the list's
two-word entries (``bull shit``) match as two consecutive words. The session's keywords
are never filtered (a surname may be on the list).

Everything works on whitespace tokens that may carry punctuation (``shit.``): masking
keeps the first letter and every non-letter (``s***.``), removal drops the token and
moves its sentence end mark to the word before it.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mcustt.wire import ProfanityFilter


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


#: Words better-profanity lists that are ordinary in meetings (medicine, news, cooking,
#: engineering...): a caption filter that masks them hides meaning, not swearing.
EVERYDAY = _set(
    """
    analysis drunk dummy erect erotic facial fat flange foobar fubar god hell hemp
    heroin hiv hookah hooch kill len lmao lmfao loin loins maxi menses meth moron murder
    naked napalm nazi nazism nimrod nipple nude omg opiate opium oral orally organ ovary
    ovum ovums paddy pawn pastie pasty pcp peyote pms pot potty prude pube pubic pubis
    racy rectal rectum rectus reich revue rum scum seaman seamen seduce sexual slave
    sleaze sleazy slope sniper snuff souse soused steamy stoned strip stroke stupid tampon
    tawdry teste testes testis thrust tinkle toke tramp trashy ugly undies unwed urinal
    urine uterus uzi valium viagra virgin vixen vodka vomit vulgar wad weed weirdo womb
    xx wtf hitler kkk klan sex gay gays lesbian homo queer hump humped jerk jerked screw
    crotch pee poop stfu gtfo hoar organ hymen incest labia penis penial penile phalli
    rape raped raper raping rapist testee teat teets vagina vulva semen sperm molest
    sadism sadist schizo retard dopey doofus
    """
)
_SUFFIXES = ("s", "es", "ed", "ing", "in", "er", "ers")
#: leading punctuation, the word (letters, digits, inner apostrophes and hyphens),
#: trailing punctuation
_TOKEN = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)
_END = re.compile(r"[.?!…]")


@dataclass(frozen=True)
class WordList:
    words: frozenset[str]
    #: multi-word entries, as tuples of words
    phrases: frozenset[tuple[str, ...]]
    longest: int


@functools.cache
def word_list() -> WordList:
    """better-profanity's list less :data:`EVERYDAY` (read once per process)."""
    # The file is found without importing the package (whose import costs ~0.15 s).
    spec = importlib.util.find_spec("better_profanity")
    if spec is None or spec.origin is None:
        raise RuntimeError("better-profanity is not installed (a dependency of mcustt)")
    path = Path(spec.origin).with_name("profanity_wordlist.txt")
    text = path.read_text("utf-8")
    words: set[str] = set()
    phrases: set[tuple[str, ...]] = set()
    for raw in text.splitlines():
        entry = raw.strip().lower()
        if not entry or entry in EVERYDAY:
            continue
        parts = tuple(entry.split())
        if len(parts) > 1:
            phrases.add(parts)
        elif entry.isalpha() or "'" in entry or "-" in entry:
            # entries with digits or symbols (``f4nny``) are leetspeak: never recognized
            words.add(entry)
    longest = max((len(p) for p in phrases), default=1)
    return WordList(frozenset(words), frozenset(phrases), longest)


def split_token(token: str) -> tuple[str, str, str]:
    """(leading punctuation, word, trailing punctuation) of a whitespace token."""
    m = _TOKEN.match(token)
    assert m is not None  # the pattern matches every string
    return m.group(1), m.group(2), m.group(3)


def _norm(core: str) -> str:
    return core.lower().replace("\u2019", "'")


def _listed(norm: str, words: frozenset[str]) -> bool:
    if not norm:
        return False
    if norm in words or norm.replace("-", "") in words:
        return True
    if "-" in norm and any(part in words for part in norm.split("-")):
        return True
    for suffix in _SUFFIXES:
        if norm.endswith(suffix) and len(norm) - len(suffix) >= 3:
            stem = norm[: -len(suffix)]
            if stem.endswith("s") and suffix in ("s", "es"):
                continue  # "assess" is not a plural of "asses"
            if stem in words:
                return True
            # doubled consonant: "fucker" ← "fuck" is bare; "shitty"/"shitting" ← "shit"
            if len(stem) >= 4 and stem[-1] == stem[-2] and stem[:-1] in words:
                return True
    return False


class Filter:
    """One session's filter: its mode and the keywords it must leave alone."""

    def __init__(self, mode: ProfanityFilter, keywords: Iterable[str] = ()) -> None:
        self.mode = mode
        self._exempt = frozenset(
            _norm(split_token(w)[1]) for phrase in keywords for w in phrase.split()
        )

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def flags(self, tokens: Sequence[str]) -> list[bool]:
        """Which tokens are profane (phrases flag each of their words)."""
        wl = word_list()
        norms = [_norm(split_token(t)[1]) for t in tokens]
        out = [n not in self._exempt and _listed(n, wl.words) for n in norms]
        if wl.phrases:
            for i in range(len(norms)):
                for size in range(2, min(wl.longest, len(norms) - i) + 1):
                    if tuple(norms[i : i + size]) in wl.phrases:
                        for j in range(i, i + size):
                            out[j] = True
        return out

    def apply(self, tokens: Sequence[str]) -> list[str | None]:
        """Each token filtered: masked, kept, or ``None`` (removed). With ``remove``,
        a removed token's sentence end moves to the kept word before it, and a removed
        capitalized sentence start passes its capital to the word after it."""
        if not self.active or not tokens:
            return list(tokens)
        flags = self.flags(tokens)
        if not any(flags):
            return list(tokens)
        if self.mode == "mask":
            return [mask(t) if bad else t for t, bad in zip(tokens, flags, strict=True)]
        out: list[str | None] = []
        capitalize_next = False
        for token, bad in zip(tokens, flags, strict=True):
            if not bad:
                if capitalize_next:
                    token = _capitalize(token)
                    capitalize_next = False
                out.append(token)
                continue
            _, core, trail = split_token(token)
            kept = [t for t in out if t is not None]
            prev = kept[-1] if kept else None
            at_start = prev is None or bool(_END.search(split_token(prev)[2]))
            if at_start and core[:1].isupper():
                capitalize_next = True
            end = "".join(_END.findall(trail))
            if end and prev is not None and not split_token(prev)[2]:
                idx = max(i for i, t in enumerate(out) if t is not None)
                out[idx] = prev + end
            out.append(None)
        return out

    def text(self, text: str) -> str:
        """``text`` filtered, its whitespace kept (summaries, answers)."""
        if not self.active or not text:
            return text
        parts = re.split(r"(\s+)", text)
        # parts: [lead ws?] token (ws token)*: tokens at even places
        tokens, seps = parts[0::2], ["", *parts[1::2]]
        out: list[str] = []
        carried = ""  # a removed token's separator, kept if it broke a line
        for sep, token in zip(seps, self.apply(tokens), strict=True):
            if token is None:
                if "\n" in sep:
                    carried = sep
                continue
            if carried and "\n" not in sep and out:
                sep = carried
            carried = ""
            out.append((sep if out or token == "" else "") + token)
        return "".join(out)


def _capitalize(token: str) -> str:
    lead, core, trail = split_token(token)
    return lead + core[:1].upper() + core[1:] + trail


def mask(token: str) -> str:
    """``fuck`` → ``f***``, ``Shit.`` → ``S***.``: letters and digits after the first
    become ``*``; punctuation and apostrophes stay."""
    lead, core, trail = split_token(token)
    if not core:
        return token
    masked = core[0] + "".join("*" if c.isalnum() else c for c in core[1:])
    return lead + masked + trail
