"""The session pipeline's hot path and the node's usage meter.

Frames are handled in the transport's task while the pipeline task is idle, and by the
pipeline task whenever something had to wait; these tests prove that the engine still
gets exactly the speech the VAD found, in order, whichever way each frame went, and that
usage counted in memory reaches the database exactly once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import make_settings, new_session, new_tenant, read_wav, run_server
from recording import RECORDED
from wsclients import producer, stream_pcm

from mcustt.config import Settings
from mcustt.store.repo import Repo
from mcustt.usage import UsageMeter
from mcustt.vad import Audio, End, Segmenter, Start

RECORDING = "recording:RecordingRecognizer"


def vad_utterances(pcm: bytes, frame: int) -> list[bytes]:
    """What the server's VAD hands the engine, replayed offline on the same frames."""
    settings = Settings()
    seg = Segmenter(
        aggressiveness=settings.vad_aggressiveness, max_ms=int(settings.max_utterance_s * 1000)
    )
    out: list[bytes] = []
    current: bytearray | None = None
    chunks = [pcm[i : i + frame] for i in range(0, len(pcm), frame)]
    for chunk in [*chunks, None]:
        evs = seg.feed(chunk) if chunk is not None else seg.flush()
        for ev in evs:
            if isinstance(ev, Start):
                current = bytearray(ev.preroll)
            elif isinstance(ev, Audio):
                assert current is not None
                current += ev.pcm
            elif isinstance(ev, End):
                assert current is not None
                out.append(bytes(current))
                current = None
    if current is not None:
        out.append(bytes(current))
    return out


@pytest.mark.parametrize("realtime", [False, True], ids=["fast", "realtime"])
async def test_engine_gets_exactly_the_vad_speech_in_order(sqlite_url: str, realtime: bool) -> None:
    """The recording engine takes some frames without waiting, defers others and makes
    some feeds wait: the audio of every utterance still arrives whole and in order."""
    pcm = read_wav("pause_en.wav") + read_wav("hello_en.wav")
    if realtime:
        pcm = pcm[: 32000 * 6]  # 6 s at real-time pace is enough to mix both paths
    expected = vad_utterances(pcm, 640)
    assert len(expected) >= 1
    RECORDED.clear()
    async with run_server(make_settings(sqlite_url, recognizer=RECORDING)) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
            await stream_pcm(ws, pcm, realtime=realtime)
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 30)
        session = await srv.state.sessions.get(s["sessionId"])
        assert session is not None and session.audio_ms == len(pcm) // 32
    streams = [r for r in RECORDED if r.fed]
    assert [bytes(r.fed) for r in streams] == expected
    # at real-time pace both paths were taken: frames fed in the transport's task and
    # frames left to the pipeline task (as fast as possible, the queue is rarely empty)
    assert sum(r.awaited for r in streams) > 0
    if realtime:
        assert sum(r.nowait for r in streams) > 0
    assert [m["seq"] for m in got.finals] == list(range(1, len(expected) + 1))


async def test_usage_is_written_once_per_tenant_and_survives_a_failed_write(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run_server(make_settings(sqlite_url)) as srv:
        t1, t2 = (await new_tenant(srv))["tenantId"], (await new_tenant(srv))["tenantId"]
        repo = Repo(srv.state.db)
        node_a, node_b = UsageMeter(repo), UsageMeter(repo)
        writes: list[tuple[str, int]] = []
        real_add = repo.add_usage
        fail = {"next": False}

        async def add_usage(tenant_id: str, audio_ms: int, *, day: str | None = None) -> int:
            if fail["next"]:
                fail["next"] = False
                raise ConnectionError("database went away")
            writes.append((tenant_id, audio_ms))
            return await real_add(tenant_id, audio_ms, day=day)

        monkeypatch.setattr(repo, "add_usage", add_usage)
        # three sessions of tenant t1 and one of t2 on node A count as they stream
        for _ in range(3):
            assert node_a.add(t1, 1_000) > 0
        node_a.add(t2, 500)
        assert node_a.add(t1, 0) == 3_000  # known without any write
        await node_a.flush()
        assert sorted(writes) == sorted([(t1, 3_000), (t2, 500)])  # one write per tenant
        # a failed write keeps the audio for the next one: nothing lost, nothing doubled
        node_a.add(t1, 2_000)
        fail["next"] = True
        with pytest.raises(ConnectionError):
            await node_a.flush()
        node_a.add(t1, 1_000)
        await node_a.flush()
        assert await repo.usage_ms(t1) == 6_000
        # another node sees the total, plus what it has not written yet
        node_b.add(t1, 250)
        assert await node_b.total(t1) == 6_250
        await node_b.aclose()
        assert await node_a.total(t1) == 6_250


async def test_session_end_writes_its_usage(sqlite_url: str) -> None:
    """A stopped session's audio is in the usage table at once, not a flush later."""
    async with run_server(make_settings(sqlite_url)) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        pcm = read_wav("hello_en.wav")
        async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
            await stream_pcm(ws, pcm, realtime=False)
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 30)
        used: Any = await srv.state.repo.usage_ms(t["tenantId"])
        assert used == len(pcm) // 32
