"""Subtitle-grade SRT and VTT (issue 17): every cue rule, checked with the ``srt`` and
``webvtt-py`` parsers, on real speech (every fixture through sphinx) and on synthetic
finals (long ones, a speaker change, a very short one, lines without word timings)."""

from __future__ import annotations

import asyncio
import html
import io
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import srt
import webvtt
from conftest import FIXTURES, Running, make_settings, new_session, new_tenant, read_wav, run_server
from wsclients import producer, stream_pcm

from mcustt import subtitles
from mcustt.errors import BadRequest
from mcustt.store.models import TranscriptLine

MAX_CPS = 20


@dataclass
class Cue:
    start: int  # ms
    end: int
    lines: list[str]
    voice: str | None = None


@dataclass
class Word:
    text: str
    start: int
    end: int
    speaker: str | None


def parse_srt(text: str) -> list[Cue]:
    return [
        Cue(
            round(s.start.total_seconds() * 1000),
            round(s.end.total_seconds() * 1000),
            s.content.split("\n"),
        )
        for s in srt.parse(text)
    ]


_TAG = re.compile(r"<[^>]*>")


def parse_vtt(text: str) -> list[Cue]:
    out = []
    for c in webvtt.from_buffer(io.StringIO(text)).captions:
        lines = [html.unescape(_TAG.sub("", line)) for line in c.lines]
        voice = html.unescape(c.voice) if c.voice else None
        out.append(
            Cue(round(c.start_in_seconds * 1000), round(c.end_in_seconds * 1000), lines, voice)
        )
        # (webvtt-py rounds start_in_seconds to whole seconds: use its clock text)
        out[-1].start = _ms(c.start)
        out[-1].end = _ms(c.end)
    return out


def _ms(clock: str) -> int:
    h, m, s = clock.split(":")
    return round((int(h) * 3600 + int(m) * 60 + float(s)) * 1000)


def expected_words(doc: dict[str, Any]) -> list[Word]:
    """The transcript json's words in cue order (lines by start, then seq), with times
    (the line's own words, or spread over the line when it has none)."""
    lines = sorted(doc["lines"], key=lambda x: max(0, x["startMs"]))
    out = []
    for line in lines:
        speaker = line["speaker"]["name"] if line.get("speaker") else None
        # (subtitle files cannot hold "-->": it would read as a timing line)
        tokens = line["text"].replace("-->", "->").split()
        words = line["words"]
        if words is not None and len(words) == len(tokens):
            out += [
                Word(t, w["startMs"], w["endMs"], speaker)
                for t, w in zip(tokens, words, strict=True)
            ]
        else:
            out += [Word(t, line["startMs"], line["endMs"], speaker) for t in tokens]
    return out


def check_cues(
    cues: Sequence[Cue],
    words: Sequence[Word],
    *,
    max_chars: int = 42,
    max_lines: int = 2,
    prefixed: bool = False,
) -> None:
    """Every rule of issue 17 on one file's cues. ``prefixed``: srt cues start a turn
    with ``Name: `` (vtt has voice spans instead)."""
    assert cues, "no cues"
    at = 0
    last_speaker: object = object()
    for k, cue in enumerate(cues):
        where = f"cue {k + 1} {cue}"
        # at most max_lines lines of at most max_chars (a lone over-long word excepted)
        assert 1 <= len(cue.lines) <= max_lines, where
        for line in cue.lines:
            assert len(line) <= max_chars or " " not in line.strip(), where
        # 1 to 7 s on screen, in order, never overlapping the next
        assert 1000 <= cue.end - cue.start <= 7000, where
        if k + 1 < len(cues):
            assert cue.end <= cues[k + 1].start, where
        # the words, in order, never split; one speaker a cue, a new cue on a change
        text = " ".join(cue.lines)
        if prefixed and words[at].speaker is not None and words[at].speaker != last_speaker:
            assert text.startswith(f"{words[at].speaker}: "), where
            text = text[len(f"{words[at].speaker}: ") :]
        tokens = text.split()
        mine = words[at : at + len(tokens)]
        assert [w.text for w in mine] == tokens, where
        assert len({w.speaker for w in mine}) == 1, where
        if not prefixed:
            assert cue.voice == mine[0].speaker, where
        last_speaker = mine[0].speaker
        at += len(tokens)
        # shown while its words are said: not before the first, not after the last
        assert mine[0].start <= cue.start <= max(mine[-1].end, mine[0].start), where
        # readable: at most 20 characters a second, unless the next cue (or the 7 s
        # limit) leaves no room for more
        chars = len(" ".join(cue.lines))
        cps = chars * 1000 / (cue.end - cue.start)
        if cps > MAX_CPS + 1e-9:
            assert (
                k + 1 < len(cues) and cue.end == cues[k + 1].start
            ) or cue.end - cue.start == 7000, where
    assert at == len(words), "every word is in a cue"


def check_exports(doc: dict[str, Any], srt_text: str, vtt_text: str, **rules: Any) -> None:
    words = expected_words(doc)
    check_cues(parse_srt(srt_text), words, prefixed=True, **rules)
    check_cues(parse_vtt(vtt_text), words, **rules)


# -- synthetic transcripts ---------------------------------------------------------------------


def line(
    seq: int,
    text: str,
    start: int,
    end: int,
    *,
    speaker: str | None = None,
    timed: bool = True,
    pause_after: str = ".?!",
    pause_ms: int = 0,
) -> TranscriptLine:
    """A stored line whose words are spread evenly over [start, end] (``timed``), with
    a pause of ``pause_ms`` after words ending in one of ``pause_after``."""
    tokens = text.split()
    words = None
    if timed:
        pauses = sum(1 for t in tokens[:-1] if t[-1] in pause_after) * pause_ms
        step = (end - start - pauses) / len(tokens)
        words, at = [], float(start)
        for t in tokens:
            words.append(
                {
                    "text": t,
                    "startMs": round(at),
                    "endMs": round(at + step * 0.9),
                    "confidence": None,
                }
            )
            at += step + (pause_ms if t[-1] in pause_after else 0)
    return TranscriptLine(
        session_id="s1",
        seq=seq,
        text=text,
        lang="en-US",
        ts=0,
        start_ms=start,
        end_ms=end,
        speaker=speaker,
        words=words,
    )


def as_doc(lines: Sequence[TranscriptLine], names: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(subtitles.to_json("s1", lines, names)))
    return doc


def export(
    lines: Sequence[TranscriptLine],
    names: dict[str, str] | None = None,
    rules: subtitles.CueRules | None = None,
) -> tuple[str, str]:
    return subtitles.to_srt(lines, names, rules), subtitles.to_vtt(lines, names, rules)


FORTY = (
    "So the plan for this quarter is simple. We ship the billing page first, then the "
    "invoices, and after that the reports that finance asked for in spring. "
    "Does anyone see a risk there? Good, let us start right now."
)


def test_a_forty_word_final_over_fifteen_seconds() -> None:
    assert len(FORTY.split()) == 40
    lines = [line(1, FORTY, 2_000, 17_000, pause_ms=300)]
    srt_text, vtt_text = export(lines)
    check_exports(as_doc(lines), srt_text, vtt_text)
    cues = parse_srt(srt_text)
    assert len(cues) >= 3  # 230 characters: never one giant cue
    # cut at punctuation where the sentences allow it
    ends = [c.lines[-1][-1] for c in cues]
    assert sum(e in ".?!," for e in ends) >= len(cues) - 1, [c.lines for c in cues]


def test_the_issue_example_a_long_line_without_word_timings() -> None:
    """Older lines (no words): 180 characters over 12.9 s are cut by interpolated times."""
    text = (FORTY * 2)[:180].rsplit(" ", 1)[0] + "."
    lines = [line(1, text, 1_000, 13_900, timed=False)]
    srt_text, vtt_text = export(lines)
    check_exports(as_doc(lines), srt_text, vtt_text)
    assert all(c.end - c.start <= 7000 for c in parse_srt(srt_text))
    assert len(parse_srt(srt_text)) >= 3


def test_a_speaker_change_starts_a_new_cue() -> None:
    lines = [
        line(1, "I think we should ship it on Friday", 0, 2_000, speaker="p1"),
        line(2, "Agreed", 2_000, 2_400, speaker="p2"),  # no pause, short: still its own cue
        line(3, "and the tests", 2_400, 3_400, speaker="p1"),
    ]
    names = {"p1": "Priya", "p2": "Sam"}
    srt_text, vtt_text = export(lines, names)
    check_exports(as_doc(lines, names), srt_text, vtt_text)
    vtt_cues = parse_vtt(vtt_text)
    assert [c.voice for c in vtt_cues] == ["Priya", "Sam", "Priya"]
    assert [c.lines[0].split(":")[0] for c in parse_srt(srt_text)] == ["Priya", "Sam", "Priya"]


def test_a_short_one_word_final_lasts_a_second_without_overlapping_the_next() -> None:
    lines = [
        line(1, "Yes.", 5_000, 5_300),
        line(2, "Next item.", 5_700, 6_500, speaker="p2"),  # another speaker, 0.4 s later
        line(3, "Okay.", 9_000, 9_300),
    ]
    srt_text, vtt_text = export(lines)
    check_exports(as_doc(lines), srt_text, vtt_text)
    cues = parse_srt(srt_text)
    assert (cues[0].start, cues[0].end) == (5_000, 6_000)
    assert cues[1].start == 6_000  # moved after the short cue, not on top of it
    assert cues[2].start == 9_000 and cues[2].end - cues[2].start == 1_000


def test_overlapping_speakers_never_overlap_on_screen() -> None:
    lines = [
        line(1, "I'll write the migration.", 1_000, 3_000, speaker="p1"),
        line(2, "We decided to ship on Friday.", 2_000, 4_500, speaker="p2"),
        line(3, "Tom & <Jerry> --> here.", 200, 900, speaker="p3"),
    ]
    names = {"p1": "Priya <A> & Co", "p2": "Sam"}
    srt_text, vtt_text = export(lines, names)
    check_exports(as_doc(lines, names), srt_text, vtt_text)
    assert "Tom &amp; &lt;Jerry> -> here." in vtt_text  # escaped, no stray "-->"
    assert "<v Priya &lt;A&gt; &amp; Co>" in vtt_text


def test_fast_speech_is_cut_into_readable_cues() -> None:
    """30 characters a second for 20 s: cues stay within the limits; reading speed is
    the best the speech allows (each cue runs into the next)."""
    text = " ".join(["information"] * 50)  # 600 characters
    lines = [line(1, text, 0, 20_000)]
    srt_text, vtt_text = export(lines)
    check_exports(as_doc(lines), srt_text, vtt_text)


def test_line_length_and_count_options() -> None:
    lines = [line(1, FORTY, 0, 15_000, pause_ms=200), line(2, "Thanks.", 20_000, 20_400)]
    for chars, count in ((32, 1), (20, 3), (60, 2), (42, 1)):
        rules = subtitles.CueRules(max_line_chars=chars, max_lines=count)
        srt_text, vtt_text = export(lines, rules=rules)
        check_exports(as_doc(lines), srt_text, vtt_text, max_chars=chars, max_lines=count)


def test_a_word_longer_than_a_line_stands_alone() -> None:
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis-like"  # 50 characters
    lines = [line(1, f"It was {word} they said.", 0, 4_000)]
    srt_text, vtt_text = export(lines)
    check_exports(as_doc(lines), srt_text, vtt_text)
    assert any(word in c.lines for c in parse_srt(srt_text))


def test_corrections_keep_word_times_when_the_words_line_up() -> None:
    same = line(1, "we ship on friday", 0, 2_000)
    same.revised_text = "We ship on Friday."
    other = line(2, "we shipped it", 3_000, 4_000)
    other.revised_text = "We shipped it to the customers last week."
    from mcustt.store.transcripts import current

    lines = [current(same), current(other)]
    doc = as_doc(lines)
    assert [w["text"] for w in doc["lines"][0]["words"]] == ["We", "ship", "on", "Friday."]
    assert doc["lines"][1]["words"] is None  # the count changed: no honest timings
    srt_text, vtt_text = export(lines)
    check_exports(doc, srt_text, vtt_text)


def test_cue_rules_from_the_query() -> None:
    assert subtitles.CueRules.from_query({}) == subtitles.CueRules(42, 2)
    assert subtitles.CueRules.from_query({"maxLineChars": "32", "maxLines": "3"}) == (
        subtitles.CueRules(32, 3)
    )
    for bad in ({"maxLineChars": "9"}, {"maxLineChars": "abc"}, {"maxLines": "0"},
                {"maxLines": "+2"}, {"maxLines": "6"}, {"maxLineChars": "201"},
                {"maxLineChars": "٤٢"}):  # fmt: skip
        with pytest.raises(BadRequest):
            subtitles.CueRules.from_query(bad)


# -- real speech: every fixture through sphinx, over the REST export --------------------------


@pytest.fixture(scope="module")
def fixture_names() -> list[str]:
    return sorted(p.stem for p in Path(FIXTURES).glob("*.wav"))


@pytest.fixture
async def sphinx_server(sqlite_url: str) -> AsyncIterator[Running]:
    async with run_server(
        make_settings(sqlite_url, recognizer="sphinx", recognizer_workers=2, max_loop_lag_ms=0)
    ) as srv:
        yield srv


async def test_every_fixture_through_sphinx(
    sphinx_server: Running, fixture_names: list[str]
) -> None:
    srv = sphinx_server
    assert len(fixture_names) >= 4
    t = await new_tenant(srv)
    key = {"x-tenant-key": t["apiKey"]}

    async def run(name: str) -> str:
        s = await new_session(srv, t["apiKey"])
        pcm = read_wav(f"{name}.wav")
        async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, _, task):
            await stream_pcm(ws, pcm, realtime=False)
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 120)
        return s["sessionId"]

    sids = [await run(name) for name in fixture_names]
    async with srv.client() as c:
        for name, sid in zip(fixture_names, sids, strict=True):
            url = f"/api/sessions/{sid}/transcript"
            doc = (await c.get(url, headers=key)).json()
            assert doc["lines"], name
            assert all(x["words"] for x in doc["lines"]), name  # sphinx gives word times
            for params, rules in (
                ({}, {}),
                ({"maxLineChars": "32", "maxLines": "1"}, {"max_chars": 32, "max_lines": 1}),
                ({"maxLineChars": "37", "maxLines": "3"}, {"max_chars": 37, "max_lines": 3}),
            ):
                r_srt = await c.get(url, params={"format": "srt", **params}, headers=key)
                r_vtt = await c.get(url, params={"format": "vtt", **params}, headers=key)
                assert r_srt.status_code == r_vtt.status_code == 200, (name, params)
                check_exports(doc, r_srt.text, r_vtt.text, **rules)


async def test_bad_cue_options_are_400_in_the_envelope(sqlite_server: Running) -> None:
    srv = sqlite_server
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"])
    url = f"/api/sessions/{s['sessionId']}/transcript"
    async with srv.client() as c:
        for params in (
            {"format": "srt", "maxLineChars": "5"},
            {"format": "vtt", "maxLineChars": "forty"},
            {"format": "srt", "maxLines": "0"},
            {"format": "vtt", "maxLines": "99"},
        ):
            r = await c.get(url, params=params, headers={"x-tenant-key": t["apiKey"]})
            assert r.status_code == 400, params
            err = r.json()["error"]
            assert err["code"] == "BAD_REQUEST"
            name = next(k for k in params if k != "format")
            assert name in err["message"], err
        r = await c.get(
            url,
            params={"format": "srt", "maxLineChars": "32", "maxLines": "1"},
            headers={"x-tenant-key": t["apiKey"]},
        )
        assert r.status_code == 200 and r.text == ""
