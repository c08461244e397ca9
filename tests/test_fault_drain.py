"""Issue 13, scenario 4: graceful drain on SIGTERM, with two real nodes on PostgreSQL
and Redis.

A producer streams real speech (sphinx) to node A, viewers watch on A and B. A gets
SIGTERM in the middle of an utterance. The promise, checked from the outside: A says
``draining`` on ``/readyz``, the utterance in flight becomes a final that is stored
and reaches everyone, the producer is told ``NODE_DRAINING`` then closed 1012 and
continues on B with a fresh ingest token, A's viewers are closed 1012 and resume on B
with their last seq, every consumer gets every final once and in order, the session
is not ended by the drain, and A exits 0 within its grace period.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import faults
import httpx
import pytest
import websockets
from conftest import Node, read_wav, spawn_node
from wsclients import Collected, collect, stream_pcm

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("fault_services")]

GRACE_S = 10
#: the process may take this much longer than the grace period (a busy CI machine;
#: sphinx workers and the database pool are closed after the drain)
EXIT_MARGIN_S = 20
RATE = 32_000  # bytes of PCM16 16 kHz mono per second


async def _poll_readyz(node: Node, seen: list[tuple[int, str]]) -> None:
    """Record /readyz answers until the node stops listening (a slow answer on a busy
    machine is waited for: a request in flight when the drain starts is still answered,
    and says ``draining`` when its checks end after that)."""
    async with httpx.AsyncClient(base_url=node.url, timeout=15) as c:
        while True:
            try:
                r = await c.get("/readyz")
            except httpx.ConnectError:
                return
            except httpx.TransportError:
                continue
            seen.append((r.status_code, r.json().get("status", "")))
            await asyncio.sleep(0.02)


async def _until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def finals(c: Collected) -> list[tuple[int, str]]:
    return [(m["seq"], m["text"]) for m in c.finals]


async def test_sigterm_drains_producers_and_viewers_to_the_other_node(
    fault_pg: str, tmp_path: Path
) -> None:
    env = faults.node_env(
        fault_pg, "drain" + uuid.uuid4().hex[:8], MCUSTT_DRAIN_GRACE_S=str(GRACE_S)
    )
    pcm = read_wav("standup_en.wav")
    # Into the third turn ("Do we need a feature flag…", 12.07 s to 14.66 s): the
    # utterance in flight when A gets SIGTERM.
    cut = int(13.6 * RATE) & ~1
    async with spawn_node(env, tmp_path / "a.log") as a, spawn_node(env, tmp_path / "b.log") as b:
        key, s = await faults.tenant_and_session(a, "Drain")
        sid = s["sessionId"]
        sub = f"/ws/subscribe?token={s['subscribeToken']}&lastSeq=0"
        on_a = asyncio.create_task(faults.watch(a.ws_url + sub))
        on_b = asyncio.create_task(faults.watch(b.ws_url + sub))
        await asyncio.sleep(0.5)

        ws = await websockets.connect(f"{a.ws_url}/ws/stt?token={s['ingestToken']}")
        got_a = Collected()
        reader = asyncio.create_task(collect(ws, got_a))
        # In real time, as a live producer does: the recognizer keeps up, so what is in
        # flight at the signal is the open utterance, not a backlog of queued audio.
        await stream_pcm(ws, pcm[:cut], realtime=True, frame=3200)

        # Until the third turn is being recognized: finals for what came before, then
        # interims of the next seq (the utterance in flight).
        def in_flight() -> bool:
            done = max((seq for seq, _ in finals(got_a)), default=0)
            return done >= 1 and any(
                not m["isFinal"] and m["seq"] > done and len(m["text"]) > 0
                for m in got_a.interims[-3:]
            )

        await _until(in_flight, "an utterance in flight on A")
        before = len(got_a.finals)
        readyz: list[tuple[int, str]] = []
        polling = asyncio.create_task(_poll_readyz(a, readyz))
        await _until(lambda: readyz, "A's /readyz")
        killed_at = time.monotonic()
        faults.sigterm(a.proc)

        # The producer keeps talking in real time until A sends it away.
        pos = cut
        while not reader.done() and pos < len(pcm):
            try:
                await ws.send(pcm[pos : pos + 640])
            except websockets.ConnectionClosed:
                break
            pos += 640
            await asyncio.sleep(0.02)
        await asyncio.wait_for(reader, 30)

        # -- the producer on A: the last final, then NODE_DRAINING, then 1012
        assert got_a.close_code == 1012, (got_a.close_code, got_a.close_reason)
        errors = [m for m in got_a.messages if m["type"] == "error"]
        assert [e["code"] for e in errors] == ["NODE_DRAINING"], errors
        drained = got_a.finals[before:]
        assert drained, "the utterance in flight was not finalized"
        kinds = got_a.types()
        assert kinds.index("error") > max(
            i for i, m in enumerate(got_a.messages) if m.get("isFinal")
        )

        # -- A's viewer: closed 1012 after it got the drained final
        seen_a = await asyncio.wait_for(on_a, 30)
        assert seen_a.close_code == 1012, (seen_a.close_code, seen_a.close_reason)
        assert finals(seen_a) == finals(got_a)

        # -- A is out of rotation while it drains, and exits 0 within its grace
        await asyncio.wait_for(polling, GRACE_S + EXIT_MARGIN_S)
        assert (503, "draining") in readyz, readyz
        code = await asyncio.wait_for(asyncio.to_thread(a.proc.wait), GRACE_S + EXIT_MARGIN_S)
        assert code == 0, faults.log_lines(a.log_path)[-30:]
        assert time.monotonic() - killed_at < GRACE_S + EXIT_MARGIN_S

        async with b.client() as c:
            state = (await c.get(f"/api/sessions/{sid}", headers={"x-tenant-key": key})).json()
            assert state["status"] == "live"  # a drain ends no session
            # -- the producer continues on B with a fresh ingest token
            r = await c.post(
                f"/api/sessions/{sid}/ingest-token", json={"ownerSecret": s["ownerSecret"]}
            )
            assert r.status_code == 200, r.text
            token = r.json()["ingestToken"]
        last_seen = seen_a.finals[-1]["seq"]
        resumed = asyncio.create_task(
            faults.watch(f"{b.ws_url}/ws/subscribe?token={s['subscribeToken']}&lastSeq={last_seen}")
        )
        got_b = Collected()
        async with websockets.connect(f"{b.ws_url}/ws/stt?token={token}") as ws_b:
            reader_b = asyncio.create_task(collect(ws_b, got_b))
            await stream_pcm(ws_b, pcm[pos:], realtime=False, frame=3200)
            await ws_b.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(reader_b, 60)
        assert got_b.messages[-1]["type"] == "session-end"
        assert got_b.finals, "nothing recognized on B"

        seen_b = await asyncio.wait_for(on_b, 30)
        seen_resumed = await asyncio.wait_for(resumed, 30)
        async with b.client() as c:
            r = await c.get(f"/api/sessions/{sid}/transcript", headers={"x-tenant-key": key})
        stored = [(line["seq"], line["text"]) for line in r.json()["lines"]]
        assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
        # Every final once, in order, for every consumer.
        assert finals(got_a) + finals(got_b) == stored
        assert finals(seen_b) == stored
        assert finals(seen_a) + finals(seen_resumed) == stored
        assert [(m["seq"], m["text"]) for m in drained] == stored[before : len(got_a.finals)]
        assert seen_b.messages[-1]["type"] == seen_resumed.messages[-1]["type"] == "session-end"
