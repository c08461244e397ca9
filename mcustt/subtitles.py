"""Transcript downloads: json, srt, vtt, txt (§10), subtitle-grade (issue 17).

Times are audio offsets since the session's first audio byte (``startMs``/``endMs`` of
each line, and of each word), so subtitles line up with a recording of the meeting.

Lines of participant tracks (issue 14) name their speaker by its current name (``names``:
participant id -> name; an unnamed participant is called by its id): json lines carry
``speaker: {id, name}``, vtt cues a voice span (``<v Priya>…</v>``), srt cues a
``Priya: `` prefix on the first cue of each turn, txt lines a ``Priya: `` prefix. txt
and json are in seq order.

SRT and VTT cues follow broadcast subtitle rules (:class:`CueRules`):

* at most ``max_lines`` lines (2) of at most ``max_line_chars`` characters (42) each,
  broken only between words (a single word longer than a line stands alone on it);
* each cue shown between 1 and 7 seconds, cues never overlap, in start order;
* a cue's words are spoken within 7 seconds; cues are cut where the speech allows
  best: after a sentence's end, then after a comma, at a pause, and before the words
  run over the limits;
* reading speed at most 20 characters per second where the speech allows: a cue stays
  up after its last word (until the next cue, at most 7 s) long enough to be read;
* a new cue when the speaker changes (and at a pause of 2 s or more);
* every word of a line appears once, in order, with the line's text as it reads.

Word times come from the line's recognized words (:func:`mcustt.words.line_words`);
a line without them (older lines, engines without timings, a correction that changed
the number of words) spreads its words over its start and end by their length.
Cutting is a small dynamic programme per run of speech (O(words x words per cue)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mcustt import wire
from mcustt.errors import BadRequest
from mcustt.store.models import TranscriptLine
from mcustt.words import line_words

FORMATS = {
    "json": "application/json",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
}

#: participant id -> display name
Names = Mapping[str, str]

#: the query options' bounds (a line shorter than 10 characters is no subtitle)
MIN_LINE_CHARS, MAX_LINE_CHARS = 10, 200
MIN_LINES, MAX_LINES = 1, 5
MIN_CUE_MS = 1_000
MAX_CUE_MS = 7_000
#: characters per second a reader can follow (the common broadcast guideline)
MAX_CPS = 20
#: a pause this long always ends a cue: text must not hang over a silence
BREAK_PAUSE_MS = 2_000


@dataclass(frozen=True)
class CueRules:
    """How cues are cut (``?maxLineChars=&maxLines=``)."""

    max_line_chars: int = 42
    max_lines: int = 2

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> CueRules:
        """The rules a request asks for.

        Raises:
            BadRequest: a value that is not a whole number within bounds.
        """
        return cls(
            max_line_chars=_int_param(query, "maxLineChars", 42, MIN_LINE_CHARS, MAX_LINE_CHARS),
            max_lines=_int_param(query, "maxLines", 2, MIN_LINES, MAX_LINES),
        )


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: int() would also take "+3", "1_0" and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _clock(ms: int, sep: str) -> str:
    ms = max(0, ms)
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _one_line(text: str) -> str:
    # A blank line ends a cue in srt and vtt; "-->" would be read as a timing line.
    return " ".join(text.split()).replace("-->", "->")


def _name(line: TranscriptLine, names: Names | None) -> str | None:
    if not line.speaker:
        return None
    return _one_line((names or {}).get(line.speaker, line.speaker)) or line.speaker


def _prefixed(line: TranscriptLine, names: Names | None) -> str:
    name = _name(line, names)
    text = _one_line(line.text)
    return f"{name}: {text}" if name else text


def _vtt_escape(text: str, *, annotation: bool = False) -> str:
    # WebVTT cue text: "&" and "<" start escapes and tags. Inside a tag's annotation
    # (the voice name) ">" would end the tag, so it is escaped there too.
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return text.replace(">", "&gt;") if annotation else text


# -- json and txt ------------------------------------------------------------------------


def to_json(
    session_id: str, lines: Sequence[TranscriptLine], names: Names | None = None
) -> wire.Transcript:
    out: list[wire.TranscriptLine] = []
    for line in lines:
        doc: wire.TranscriptLine = {
            "seq": line.seq,
            "lang": line.lang,
            "text": line.text,
            "ts": line.ts,
            "startMs": line.start_ms,
            "endMs": line.end_ms,
            # issue 17: always in the json export (null: none recorded)
            "confidence": line.confidence,
            "words": line_words(line),
        }
        # Lines are read with their current text (store.transcripts.current): say so.
        if line.revised_text is not None:
            doc["revised"] = True
        if line.speaker:
            doc["speaker"] = {
                "id": line.speaker,
                "name": (names or {}).get(line.speaker, line.speaker),
            }
        out.append(doc)
    return {"sessionId": session_id, "lineCount": len(lines), "lines": out}


def to_txt(lines: Sequence[TranscriptLine], names: Names | None = None) -> str:
    return "".join(_prefixed(line, names) + "\n" for line in lines)


# -- cues ------------------------------------------------------------------------------------


@dataclass
class _Token:
    """One word of a run, with its time; ``text`` may carry the speaker's ``Name: ``."""

    text: str
    start: int
    end: int


@dataclass
class Cue:
    """One subtitle: its lines of text, times, and the speaker's name (None: mixed)."""

    start: int
    end: int
    lines: list[str]
    speaker: str | None


def _timed_words(line: TranscriptLine) -> list[_Token]:
    """The line's words (its text as it reads) with times: the recognized words' when
    they match the text word for word, else spread over the line by length."""
    tokens = _one_line(line.text).split()
    start, end = line.start_ms, max(line.end_ms, line.start_ms)
    words = line_words(line)
    if words is not None and len(words) == len(tokens):
        out, prev = [], start
        for token, word in zip(tokens, words, strict=True):
            # Kept inside the line and in order, whatever the stored values say.
            w_start = min(max(word["startMs"], prev, start), end)
            w_end = min(max(word["endMs"], w_start), end)
            out.append(_Token(token, w_start, w_end))
            prev = w_start
        return out
    # Older lines: each word gets a share of the line's time by its length (+1 for the
    # space after it), which keeps long words long and cues near the speech.
    weights = [len(t) + 1 for t in tokens]
    total = sum(weights) or 1
    out, at = [], 0
    for token, weight in zip(tokens, weights, strict=True):
        w_start = start + (end - start) * at // total
        at += weight
        out.append(_Token(token, w_start, start + (end - start) * at // total))
    return out


def _runs(
    lines: Sequence[TranscriptLine], names: Names | None, *, prefix: bool
) -> list[tuple[str | None, list[_Token]]]:
    """Lines in start order, joined into runs of one speaker without a long pause;
    each run starts with the speaker's ``Name: `` on its first word when ``prefix``."""
    ordered = sorted(lines, key=lambda line: max(0, line.start_ms))  # stable: seq order
    runs: list[tuple[str | None, list[_Token]]] = []
    last_speaker: object = object()
    for line in ordered:
        tokens = _timed_words(line)
        if not tokens:
            continue
        name = _name(line, names)
        current = runs[-1][1] if runs else None
        if (
            current is None
            or line.speaker != last_speaker
            or tokens[0].start - current[-1].end >= BREAK_PAUSE_MS
        ):
            if prefix and name and line.speaker != last_speaker:
                tokens[0] = _Token(f"{name}: {tokens[0].text}", tokens[0].start, tokens[0].end)
            runs.append((name, tokens))
        else:
            current.extend(tokens)
        last_speaker = line.speaker
    return runs


def _fits(rules: CueRules, lines: int, width: int, word: int) -> tuple[int, int]:
    """Greedy line filling: (lines, width of the last) after adding a word."""
    if lines == 0:
        return 1, word
    if width + 1 + word <= rules.max_line_chars:
        return lines, width + 1 + word
    return lines + 1, word


def _break_cost(tokens: list[_Token], j: int) -> float:
    """How bad it is to end a cue after ``tokens[j - 1]`` (lower is better)."""
    last = tokens[j - 1].text
    if last.endswith((".", "?", "!", "…", '."', '?"', '!"')):
        cost = 0.0
    elif last.endswith((",", ";", ":", "\u2014", "\u2013")):  # dashes
        cost = 3.0
    else:
        cost = 10.0
    if j < len(tokens):
        pause = tokens[j].start - tokens[j - 1].end
        cost -= min(max(pause, 0), 1_000) / 100  # up to 10 for a pause of 1 s
    return cost


def _cut(rules: CueRules, tokens: list[_Token], next_start: float) -> list[tuple[int, int]]:
    """The best cut of a run into cues (index ranges), by dynamic programming."""
    n = len(tokens)
    best = [math.inf] * (n + 1)
    back = [0] * (n + 1)
    best[0] = 0.0
    # Per position, computed once: the cost of a cut there (plus a cue's own cost).
    cut_cost = [2.0 + _break_cost(tokens, j) if j < n else 2.0 for j in range(n + 1)]
    lengths = [len(t.text) for t in tokens]
    for i in range(n):
        if best[i] == math.inf:
            continue
        lines, width, chars = 0, 0, -1
        first = tokens[i].start
        for j in range(i + 1, n + 1):
            word = lengths[j - 1]
            lines, width = _fits(rules, lines, width, word)
            chars += word + 1
            speech = tokens[j - 1].end - first
            if j > i + 1 and (lines > rules.max_lines or speech > MAX_CUE_MS):
                break  # longer cues only get worse (a lone word is always allowed)
            # How long it can stay up: until the next word (or run) starts, 7 s at most.
            room = (tokens[j].start if j < n else next_start) - first
            shown = min(max(speech, MIN_CUE_MS, chars * 1000 / MAX_CPS), MAX_CUE_MS, room)
            cost = cut_cost[j]
            cps = chars * 1000 / max(shown, 1)
            if cps > MAX_CPS:
                cost += (cps - MAX_CPS) * 2
            if speech < MIN_CUE_MS:
                cost += 4.0  # it must stay up longer than it is spoken
            if chars < rules.max_line_chars // 2 and j < n:
                cost += 6.0  # a short scrap of a cue between two others
            total = best[i] + cost
            if total < best[j]:
                best[j], back[j] = total, i
    cuts: list[tuple[int, int]] = []
    j = n
    while j > 0:
        cuts.append((back[j], j))
        j = back[j]
    return cuts[::-1]


def _line_break_cost(word: str) -> float:
    if word.endswith((".", "?", "!", "…")):
        return 0.0
    if word.endswith((",", ";", ":")):
        return 40.0
    return 120.0


def _wrap(rules: CueRules, words: list[str]) -> list[str]:
    """A cue's words in as few lines as the greedy fill needs, balanced (the lines as
    even as possible, breaking after punctuation when that costs little)."""
    count = 0
    width = 0
    for word in words:
        count, width = _fits(rules, count, width, len(word))
    if count <= 1:
        return [" ".join(words)]
    n = len(words)
    # best[k][j]: cost of words[:j] in k lines
    inf = math.inf
    best = [[inf] * (n + 1) for _ in range(count + 1)]
    back = [[0] * (n + 1) for _ in range(count + 1)]
    best[0][0] = 0.0
    for k in range(1, count + 1):
        for j in range(1, n + 1):
            width = -1
            for i in range(j - 1, -1, -1):
                width += len(words[i]) + 1
                if width > rules.max_line_chars and i < j - 1:
                    break
                if best[k - 1][i] == inf:
                    continue
                slack = rules.max_line_chars - width
                cost = best[k - 1][i] + slack * slack
                if j < n:
                    # A break inside a phrase reads worse than after one: uneven lines
                    # are the lesser evil (within reason).
                    cost += _line_break_cost(words[j - 1])
                if cost < best[k][j]:
                    best[k][j], back[k][j] = cost, i
    lines: list[str] = []
    j, k = n, count
    while k > 0:
        i = back[k][j]
        lines.append(" ".join(words[i:j]))
        j, k = i, k - 1
    return lines[::-1]


def cues(
    lines: Sequence[TranscriptLine],
    names: Names | None = None,
    rules: CueRules | None = None,
    *,
    prefix: bool = True,
) -> list[Cue]:
    """The subtitle cues of a transcript (see the module docstring for the rules)."""
    rules = rules or CueRules()
    runs = _runs(lines, names, prefix=prefix)
    out: list[Cue] = []
    for r, (name, tokens) in enumerate(runs):
        next_start = runs[r + 1][1][0].start if r + 1 < len(runs) else math.inf
        for i, j in _cut(rules, tokens, next_start):
            part = tokens[i:j]
            out.append(
                Cue(
                    start=part[0].start,
                    end=part[-1].end,
                    lines=_wrap(rules, [t.text for t in part]),
                    speaker=name,
                )
            )
    _time(out)
    return out


def _time(cues: list[Cue]) -> None:
    """Final times: each cue 1 to 7 s, long enough to read where the next one leaves
    room, never overlapping the next (which starts later if it must)."""
    prev_end = 0
    for k, cue in enumerate(cues):
        start = max(cue.start, prev_end)
        chars = sum(len(line) for line in cue.lines) + len(cue.lines) - 1
        want = max(cue.end - start, MIN_CUE_MS, math.ceil(chars * 1000 / MAX_CPS))
        end = start + min(want, MAX_CUE_MS)
        if k + 1 < len(cues):
            # Up to the next cue's start, but never shorter than the minimum: then the
            # next one starts a little later (the loop moves it).
            end = max(min(end, cues[k + 1].start), start + MIN_CUE_MS)
        cue.start, cue.end = start, end
        prev_end = end


def to_srt(
    lines: Sequence[TranscriptLine], names: Names | None = None, rules: CueRules | None = None
) -> str:
    out = []
    for i, cue in enumerate(cues(lines, names, rules), 1):
        text = "\n".join(cue.lines)
        out.append(f"{i}\n{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}\n{text}\n")
    return "\n".join(out)


def to_vtt(
    lines: Sequence[TranscriptLine], names: Names | None = None, rules: CueRules | None = None
) -> str:
    out = ["WEBVTT\n"]
    for i, cue in enumerate(cues(lines, names, rules, prefix=False), 1):
        text = "\n".join(_vtt_escape(line) for line in cue.lines)
        if cue.speaker:
            text = f"<v {_vtt_escape(cue.speaker, annotation=True)}>{text}</v>"
        out.append(f"{i}\n{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}\n{text}\n")
    return "\n".join(out)
