"""Transcript downloads: json, srt, vtt, txt (§10).

Cue timings come from the audio offsets of each line (start_ms/end_ms since the
session's first audio byte), so subtitles line up with a recording of the meeting.

Lines of participant tracks (issue 14) name their speaker by its current name (``names``:
participant id -> name; an unnamed participant is called by its id): json lines carry
``speaker: {id, name}``, vtt cues a voice span (``<v Priya>…</v>``), srt cues and txt
lines a ``Priya: `` prefix. Every line is its own cue, so two speakers' words never
share one. Cues are ordered by start time (players and the WebVTT spec want that; the
tracks of overlapping speakers finalize out of start order), txt and json by seq.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mcustt import wire
from mcustt.store.models import TranscriptLine

FORMATS = {
    "json": "application/json",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
}

#: participant id -> display name
Names = Mapping[str, str]


def _clock(ms: int, sep: str) -> str:
    ms = max(0, ms)
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(lines: Sequence[TranscriptLine]) -> list[tuple[TranscriptLine, int, int]]:
    """Each line with its cue times, in start order (ties: seq order)."""
    cues = []
    for line in lines:
        start = line.start_ms
        # A cue must have positive length for players to show it.
        end = max(line.end_ms, start + 500)
        cues.append((line, start, end))
    # Stable: a single producer's lines, already in start order, keep their seq order.
    cues.sort(key=lambda cue: max(0, cue[1]))
    return cues


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


def to_srt(lines: Sequence[TranscriptLine], names: Names | None = None) -> str:
    out = []
    for i, (line, start, end) in enumerate(_cues(lines), 1):
        out.append(f"{i}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{_prefixed(line, names)}\n")
    return "\n".join(out)


def to_vtt(lines: Sequence[TranscriptLine], names: Names | None = None) -> str:
    out = ["WEBVTT\n"]
    for line, start, end in _cues(lines):
        text = _vtt_escape(_one_line(line.text))
        name = _name(line, names)
        if name:
            text = f"<v {_vtt_escape(name, annotation=True)}>{text}</v>"
        out.append(f"{line.seq}\n{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n")
    return "\n".join(out)


def to_txt(lines: Sequence[TranscriptLine], names: Names | None = None) -> str:
    return "".join(_prefixed(line, names) + "\n" for line in lines)
