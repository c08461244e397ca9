"""Transcript downloads: json, srt, vtt, txt (§10).

Cue timings come from the audio offsets of each line (start_ms/end_ms since the
session's first audio byte), so subtitles line up with a recording of the meeting.
"""

from __future__ import annotations

from collections.abc import Sequence

from mcustt import wire
from mcustt.store.models import TranscriptLine

FORMATS = {
    "json": "application/json",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
}


def _clock(ms: int, sep: str) -> str:
    ms = max(0, ms)
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cue_times(lines: Sequence[TranscriptLine]) -> list[tuple[int, int]]:
    times = []
    for line in lines:
        start = line.start_ms
        # A cue must have positive length for players to show it.
        end = max(line.end_ms, start + 500)
        times.append((start, end))
    return times


def _one_line(text: str) -> str:
    # A blank line ends a cue in srt and vtt; "-->" would be read as a timing line.
    return " ".join(text.split()).replace("-->", "->")


def to_json(session_id: str, lines: Sequence[TranscriptLine]) -> wire.Transcript:
    return {
        "sessionId": session_id,
        "lineCount": len(lines),
        "lines": [_json_line(line) for line in lines],
    }


def _json_line(line: TranscriptLine) -> wire.TranscriptLine:
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
    return doc


def to_srt(lines: Sequence[TranscriptLine]) -> str:
    out = []
    for i, (line, (start, end)) in enumerate(zip(lines, _cue_times(lines), strict=True), 1):
        out.append(f"{i}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{_one_line(line.text)}\n")
    return "\n".join(out)


def to_vtt(lines: Sequence[TranscriptLine]) -> str:
    out = ["WEBVTT\n"]
    for line, (start, end) in zip(lines, _cue_times(lines), strict=True):
        out.append(
            f"{line.seq}\n{_clock(start, '.')} --> {_clock(end, '.')}\n{_one_line(line.text)}\n"
        )
    return "\n".join(out)


def to_txt(lines: Sequence[TranscriptLine]) -> str:
    return "".join(_one_line(line.text) + "\n" for line in lines)
