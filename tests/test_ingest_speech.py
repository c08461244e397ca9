"""Real speech through the default engine (pocketsphinx), end to end over /ws/stt.

pocketsphinx is weak on these synthetic voices (WER ~0.75), so the checks are on words
it reliably gets right, on order, persistence and timing structure.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator

import pytest
from conftest import Running, make_settings, new_session, new_tenant, read_wav, run_server
from wsclients import producer, stream_pcm

# words pocketsphinx gets right in standup_en whatever its decoders heard before
ROBUST = {"decided", "migration"}


@pytest.fixture
async def sphinx_server(db_url: str) -> AsyncIterator[Running]:
    async with run_server(make_settings(db_url, recognizer="sphinx", recognizer_workers=2)) as srv:
        yield srv


async def test_standup_meeting_as_fast_as_accepted(sphinx_server: Running) -> None:
    await _standup(sphinx_server, realtime=False)


async def test_standup_meeting_at_real_time_pace(sqlite_url: str) -> None:
    async with run_server(
        make_settings(sqlite_url, recognizer="sphinx", recognizer_workers=2)
    ) as srv:
        await _standup(srv, realtime=True)


async def _standup(srv: Running, *, realtime: bool) -> None:
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"])
    pcm = read_wav("standup_en.wav")
    async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
        await stream_pcm(ws, pcm, realtime=realtime)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 120)
    finals = got.finals
    assert [f["seq"] for f in finals] == list(range(1, len(finals) + 1))
    assert len(finals) >= 5  # seven turns; VAD splits at pauses
    words = set(re.findall(r"[\w']+", " ".join(f["text"] for f in finals).lower()))
    assert words >= ROBUST, [f["text"] for f in finals]
    assert all(f["lang"] == "en-US" for f in finals)
    # interims come first, update in place (same provisional seq), then the final
    for f in finals:
        same = [i for i, m in enumerate(got.messages) if m.get("seq") == f["seq"]]
        assert got.messages[same[0]]["isFinal"] is False
        assert got.messages[same[-1]] == f
    # the language was reported once, before the first transcript
    assert [m for m in got.messages if m["type"] == "language"] == [
        {"type": "language", "code": "en-US"}
    ]
    assert got.types()[-1] == "session-end" and got.close_code == 1000
    # persisted exactly as sent, with audio offsets inside the 38 s recording
    lines = await srv.state.repo.lines(s["sessionId"])
    assert [(ln.seq, ln.text) for ln in lines] == [(f["seq"], f["text"]) for f in finals]
    assert all(0 <= ln.start_ms < ln.end_ms <= 38_200 for ln in lines)
    assert all(a.end_ms <= b.start_ms + 400 for a, b in itertools.pairwise(lines))
    state = await srv.stored_session(s["sessionId"])
    assert abs(state.audio_ms - 38_100) < 200


async def test_silence_is_not_recognized(sqlite_url: str) -> None:
    async with run_server(
        make_settings(sqlite_url, recognizer="sphinx", recognizer_workers=1)
    ) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        pcm = read_wav("pause_en.wav")  # 8 s of silence between two sentences
        async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
            await stream_pcm(ws, pcm, realtime=False)
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 60)
        lines = await srv.state.repo.lines(s["sessionId"])
        assert len(lines) == 2
        # nothing was decoded inside the pause (3.4 s .. 11.4 s)
        assert lines[0].end_ms < 4_500 and lines[1].start_ms > 10_500
