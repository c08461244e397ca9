"""mcustt.client against real servers: REST with typed errors, the producer (files of any
format, reconnects without a seq gap), the viewer (every final once across drops), and
real speech through sphinx end to end."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import srt
import webvtt
from conftest import ADMIN, FIXTURES, Running, make_settings, read_wav, run_server
from media import encode
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from mcustt import wire
from mcustt.client import (
    Client,
    Event,
    NotFound,
    Producer,
    RateLimited,
    StreamClosed,
    Unauthorized,
    Viewer,
    audio_duration,
    decode_audio,
)

SCRIPTED = "scripted:ScriptedRecognizer"


@contextlib.asynccontextmanager
async def scripted_server(sqlite_url: str, **overrides: Any) -> AsyncIterator[Running]:
    async with run_server(make_settings(sqlite_url, recognizer=SCRIPTED, **overrides)) as srv:
        yield srv


async def tenant_client(srv: Running, **tenant: Any) -> Client:
    async with Client(srv.url, admin_token=ADMIN) as admin:
        created = await admin.create_tenant("Acme", **tenant)
    return Client(srv.url, tenant_key=created["apiKey"])


async def drop(viewer: Viewer, *, after: ClientConnection | None) -> ClientConnection:
    """Cut the viewer's socket (a network drop) once it has one newer than ``after``."""
    for _ in range(200):
        ws = viewer._ws
        if ws is not None and ws is not after and ws.state is State.OPEN:
            ws.transport.abort()
            return ws
        await asyncio.sleep(0.02)
    raise AssertionError("the viewer did not reconnect")


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events if e.seq is not None]


# -- REST -------------------------------------------------------------------------------------------


async def test_admin_and_session_rest_with_typed_errors(sqlite_url: str) -> None:
    async with scripted_server(sqlite_url, rate_summarize="3/minute") as srv:
        async with Client(srv.url, admin_token=ADMIN) as admin:
            created = await admin.create_tenant(
                "Acme", max_sessions=5, brand={"brandName": "Acme Live", "accentColor": "#0b5"}
            )
            tid = created["tenantId"]
            assert created["apiKey"].startswith("sk_mcustt_") and created["maxSessions"] == 5
            assert tid in [t["tenantId"] for t in await admin.list_tenants()]
            assert (await admin.get_tenant(tid))["brand"]["brandName"] == "Acme Live"
            updated = await admin.update_tenant(tid, daily_minutes_cap=60, name="Acme Corp")
            assert (updated["name"], updated["dailyMinutesCap"]) == ("Acme Corp", 60)
            with pytest.raises(NotFound) as missing:
                await admin.get_tenant("tn_nope")
            assert missing.value.status == 404 and missing.value.code == "NOT_FOUND"
            rotated = await admin.rotate_key(tid)
        async with Client(srv.url, tenant_key=created["apiKey"]) as old:
            with pytest.raises(Unauthorized) as dead:
                await old.list_sessions()
            assert dead.value.code == "INVALID_TENANT_KEY"

        async with Client(srv.url, tenant_key=rotated["apiKey"]) as c:
            session = await c.create_session(title="Board call", source_lang="en-US")
            sid, owner = session["sessionId"], session["ownerSecret"]
            state = await c.get_session(sid)
            assert (state["status"], state["title"], state["sourceLang"]) == (
                "live",
                "Board call",
                "en-US",
            )
            assert [s["sessionId"] for s in await c.list_sessions("live")] == [sid]
            read = await c.embed_token(sid, owner_secret=owner)
            assert (await c.get_session(sid, token=read["subscribeToken"]))["sessionId"] == sid
            minted = await c.ingest_token(sid, owner)
            assert minted["ingestUrl"].endswith("/ws/stt?token=" + minted["ingestToken"])
            with pytest.raises(NotFound) as gone:
                await c.get_session("nosuchsess")
            assert gone.value.code == "SESSION_NOT_FOUND"
            with pytest.raises(Unauthorized):
                await c.ingest_token(sid, "wrong-secret")

            ended = await c.end_session(sid, owner_secret=owner)
            assert ended["status"] == "ended"
            summary = await c.summary(sid, wait=True, max_wait=30)
            assert summary["status"] == "ready" and "tldr" in summary["content"]
            assert (await c.summarize(sid, owner_secret=owner))["status"] == "pending"

            # Batch: inline, then rate-limited with Retry-After.
            inline = await c.transcribe_summary(
                subtitles=[
                    {"text": "We decided to ship on Friday.", "speaker": "A"},
                    {"text": "Priya will write the migration.", "speaker": "B"},
                ],
                want=["summary", "transcript"],
            )
            assert "jobId" not in inline
            assert "A: We decided" in inline["transcript"]
            with pytest.raises(RateLimited) as limited:
                for _ in range(3):
                    await c.transcribe_summary(text="one line")
            assert limited.value.status == 429 and limited.value.retry_after
            assert limited.value.retry_after > 0


async def test_batch_job_and_wait(sqlite_url: str) -> None:
    async with scripted_server(sqlite_url) as srv:
        c = await tenant_client(srv)
        async with c:
            big = "\n".join(f"Line {i}: we decided to ship the billing page." for i in range(400))
            # An input this large is answered with a job (checked right below).
            accepted = cast(wire.JobAccepted, await c.transcribe_summary(text=big))
            assert "jobId" in accepted and accepted["status"] in ("queued", "running", "ready")
            job = await c.wait_job(accepted["jobId"], max_wait=60)
            assert job["status"] == "ready" and job["result"] is not None
            # A batch job's result (its kind is batch_summary).
            assert cast(wire.BatchResult, job["result"])["summary"]["tldr"]
            # With wait=True the answer is the job's result, never a JobAccepted.
            result = cast(
                wire.BatchResult, await c.transcribe_summary(text=big + "\nOne more.", wait=True)
            )
            assert result["summary"]["tldr"]


# -- producer ------------------------------------------------------------------------------------------


async def test_producer_streams_any_file_format(sqlite_url: str, tmp_path: Path) -> None:
    """A 44.1 kHz stereo mp3 and a 48 kHz Opus file are decoded and resampled to the
    wire format: the server hears exactly the fixture's duration of audio."""
    mp3 = encode(FIXTURES / "hello_en.wav", tmp_path / "hello.mp3", "libmp3lame", 44100)
    ogg = encode(FIXTURES / "hello_en.wav", tmp_path / "hello.ogg", "libopus", 48000)
    expected = len(read_wav("hello_en.wav")) / 32000
    async with scripted_server(sqlite_url) as srv:
        c = await tenant_client(srv)
        async with c:
            for path in (mp3, ogg):
                assert abs((audio_duration(path) or 0) - expected) < 0.05
                assert abs(len(b"".join(decode_audio(path))) / 32000 - expected) < 0.02
                session = await c.create_session()
                progress: list[float] = []
                async with c.producer(session, realtime=False) as p:
                    await p.send_file(path, progress=progress.append)
                    await p.stop()
                assert p.ended and seqs(p.finals) == [1]
                assert progress == sorted(progress) and abs(progress[-1] - expected) < 0.02
                state = await c.get_session(session["sessionId"])
                assert abs(state["audioSeconds"] - expected) < 0.1


async def test_zero_ceremony_producer_and_event_stream(sqlite_url: str) -> None:
    async with scripted_server(sqlite_url) as srv:
        c = await tenant_client(srv)
        async with c:
            seen: list[Event] = []
            p = c.producer(realtime=False, source_lang="en-GB", title="adhoc", on_event=seen.append)
            async with p:
                assert p.session_id and p.owner_secret and p.ready["type"] == "ready"
                events: list[Event] = []

                async def collect() -> None:
                    async for event in p.events():
                        events.append(event)

                task = asyncio.create_task(collect())
                await p.send_wav(FIXTURES / "hello_en.wav")
                await p.stop()
                await asyncio.wait_for(task, 10)
            assert [e.type for e in events] == [e.type for e in seen]
            assert events[-1].type == "session-end" and seqs(p.finals) == [1]
            state = await c.get_session(p.session_id)
            assert (state["title"], state["sourceLang"], state["status"]) == (
                "adhoc",
                "en-GB",
                "ended",
            )


async def test_producer_reconnects_without_a_seq_gap(sqlite_url: str) -> None:
    """Two drops mid-speech: the client's transport dies (network), then the server
    closes the idle socket. The producer mints fresh ingest tokens, reconnects and
    carries on; finals are gap-free and the same as the stored transcript."""
    pcm = read_wav("standup_en.wav")
    third = len(pcm) // 3 // 640 * 640
    async with scripted_server(sqlite_url, ingest_idle_timeout_s=1.0) as srv:
        c = await tenant_client(srv)
        async with c:
            session = await c.create_session()
            async with c.producer(session, realtime=False) as p:
                await p.send_pcm(pcm[:third])
                assert p._ws is not None
                p._ws.transport.abort()  # a network drop, mid-utterance
                await p.send_pcm(pcm[third : 2 * third])
                await asyncio.sleep(2.5)  # the server closes the idle socket (1000)
                await p.send_pcm(pcm[2 * third :])
                await p.stop()
            assert p.reconnects >= 2
            lines = (await c.transcript(session["sessionId"]))["lines"]
            assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
            assert seqs(p.finals) == [line["seq"] for line in lines]
            assert [e.text for e in p.finals] == [line["text"] for line in lines]
            assert len(lines) >= 7  # every turn of the standup (and the cut ones)


async def test_producer_reports_fatal_errors(sqlite_url: str) -> None:
    async with scripted_server(sqlite_url) as srv:
        c = await tenant_client(srv)
        async with c:
            session = await c.create_session()
            p = c.producer(session, realtime=False)
            await p.connect()
            assert p._ws is not None
            await p._ws.send(b"RIFF" + bytes(636))  # a WAV header is not PCM: 1003
            with pytest.raises(StreamClosed) as closed:
                for _ in range(200):
                    await p.send(bytes(640))
                    await asyncio.sleep(0.01)
            assert closed.value.close_code == 1003
            assert closed.value.code == "INVALID_AUDIO_FORMAT"
            await p.close()


# -- viewer ---------------------------------------------------------------------------------------------


async def test_viewer_resumes_and_yields_every_final_once(sqlite_url: str) -> None:
    pcm = read_wav("standup_en.wav")
    step = len(pcm) // 4 // 640 * 640
    async with scripted_server(sqlite_url) as srv:
        c = await tenant_client(srv)
        async with c:
            session = await c.create_session()
            sid = session["sessionId"]
            viewer = c.viewer(sid)
            got: list[Event] = []

            async def watch() -> None:
                async for event in viewer:
                    got.append(event)

            task = asyncio.create_task(watch())
            cut: ClientConnection | None = None
            async with c.producer(session, realtime=False) as p:
                for i in range(4):
                    await p.send_pcm(pcm[i * step : (i + 1) * step])
                    await asyncio.sleep(0.2)  # let finals flow, then cut the viewer
                    cut = await drop(viewer, after=cut)
                await p.send_pcm(pcm[4 * step :])
                await p.stop()
            await asyncio.wait_for(task, 30)
            assert viewer.reconnects == 4
            finals = [e for e in got if e.is_final]
            lines = (await c.transcript(sid))["lines"]
            assert seqs(finals) == [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
            assert got[-1].type == "session-end"

            # A viewer of an ended session replays everything from the start, once.
            replayed = [e async for e in c.viewer(sid)]
            assert seqs([e for e in replayed if e.is_final]) == seqs(finals)
            # ... or from where a previous viewer left off.
            tail = [e async for e in c.viewer(sid, last_seq=3) if e.is_final]
            assert seqs(tail) == seqs(finals)[3:]


# -- real speech ----------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_standup_end_to_end_with_sphinx(sqlite_url: str) -> None:
    """The bundled standup through pocketsphinx: finals carry words sphinx always gets,
    the viewer sees the same finals, srt/vtt downloads parse as subtitles, the summary
    is ready."""
    settings = make_settings(sqlite_url, recognizer="sphinx", recognizer_workers=2)
    async with run_server(settings) as srv:
        c = await tenant_client(srv)
        async with c:
            session = await c.create_session(title="Standup", source_lang="en-US")
            sid = session["sessionId"]
            viewer_finals: list[Event] = []

            async def watch() -> None:
                async for event in c.viewer(sid, token=session["subscribeToken"]):
                    if event.is_final:
                        viewer_finals.append(event)

            task = asyncio.create_task(watch())
            producer: Producer
            async with c.producer(session, realtime=False) as producer:
                await producer.send_wav(FIXTURES / "standup_en.wav")
                await producer.stop()
            await asyncio.wait_for(task, 30)

            words = re.findall(r"[\w']+", " ".join(e.text for e in producer.finals).lower())
            assert "friday" in words and "migration" in words
            assert [(e.seq, e.text) for e in viewer_finals] == [
                (e.seq, e.text) for e in producer.finals
            ]

            # Subtitle cues (issue 17: cut by word times; tests/test_subtitles.py checks
            # the rules) hold every word of the finals, in order.
            subs = list(srt.parse(await c.transcript(sid, "srt")))
            said = " ".join(e.text for e in producer.finals).split()
            assert " ".join(s.content for s in subs).split() == said
            assert all(s.start < s.end for s in subs)
            assert subs[-1].start.total_seconds() <= 38.2
            vtt = webvtt.from_string(await c.transcript(sid, "vtt")).captions
            assert [cue.text for cue in vtt] == [s.content for s in subs]
            # The same cue times in both formats, and vtt cues numbered in order.
            assert [cue.start for cue in vtt] == [
                srt.timedelta_to_srt_timestamp(s.start).replace(",", ".") for s in subs
            ]
            assert [cue.identifier for cue in vtt] == [str(i) for i in range(1, len(vtt) + 1)]
            txt = await c.transcript(sid, "txt")
            assert txt.splitlines() == [e.text for e in producer.finals]

            summary = await c.summary(sid, wait=True, max_wait=60)
            assert summary["status"] == "ready" and summary["content"]["tldr"]
