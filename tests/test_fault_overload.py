"""Issue 13, scenario 5: overload. A saturated node refuses *new* producers cleanly
(503 ``NODE_OVERLOADED`` with ``Retry-After``, the token left usable) while the
producers it took keep working; two real nodes on PostgreSQL and Redis.

Node A has a producer cap of 2; node B's event-loop lag threshold is so low that it
always counts as saturated (the lag monitor's path, without having to saturate a
shared CI machine for real).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import faults
import httpx
import pytest
import websockets
from conftest import ADMIN, Node, read_wav, spawn_node
from websockets.exceptions import InvalidStatus
from wsclients import Collected, collect, silence, stream_pcm

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("fault_services")]


async def _refusal(url: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url):
            pass
    response = info.value.response
    return response.status_code, dict(response.headers), json.loads(response.body or b"{}")


async def _metrics(node: Node) -> str:
    async with node.client() as c:
        r = await c.get("/metrics", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    return r.text


async def test_an_overloaded_node_refuses_new_producers_and_keeps_its_own(
    fault_pg: str, tmp_path: Path
) -> None:
    common = {
        "MCUSTT_DATABASE_URL": fault_pg,
        "MCUSTT_REDIS_URL": faults.REDIS_URL,
        "MCUSTT_REDIS_PREFIX": "ovl" + uuid.uuid4().hex[:8],
        "MCUSTT_RECOGNIZER": "scripted:ScriptedRecognizer",
    }
    env_a = {**common, "MCUSTT_MAX_PRODUCERS_PER_NODE": "2"}
    env_b = {**common, "MCUSTT_MAX_LOOP_LAG_MS": "0.001"}  # always "saturated"
    async with (
        spawn_node(env_a, tmp_path / "a.log") as a,
        spawn_node(env_b, tmp_path / "b.log") as b,
    ):
        async with a.client() as c:
            r = await c.post(
                "/api/admin/tenants",
                json={"name": "Overload"},
                headers={"authorization": f"Bearer {ADMIN}"},
            )
            key = r.json()["apiKey"]
            sessions = [
                (await c.post("/api/sessions", json={}, headers={"x-tenant-key": key})).json()
                for _ in range(3)
            ]
        first, second, third = sessions
        # Viewers are not refused by an overloaded node: one on B watches the first.
        watching = asyncio.create_task(
            faults.watch(f"{b.ws_url}/ws/subscribe?token={first['subscribeToken']}&lastSeq=0")
        )
        ws1 = await websockets.connect(f"{a.ws_url}/ws/stt?token={first['ingestToken']}")
        ws2 = await websockets.connect(f"{a.ws_url}/ws/stt?token={second['ingestToken']}")
        got1, got2 = Collected(), Collected()
        readers = [asyncio.create_task(collect(ws1, got1)), asyncio.create_task(collect(ws2, got2))]

        # The third producer: refused by both nodes, cleanly.
        for node, reason in ((a, "producer_cap"), (b, "loop_lag")):
            status, headers, body = await _refusal(
                f"{node.ws_url}/ws/stt?token={third['ingestToken']}"
            )
            assert status == 503, (status, body)
            assert int(headers["retry-after"]) >= 1
            assert body["error"]["code"] == "NODE_OVERLOADED", body
            assert f'mcustt_admissions_refused_total{{reason="{reason}"}} 1.0' in (
                await _metrics(node)
            )
        assert "mcustt_event_loop_lag_seconds" in await _metrics(b)

        # The admitted producers keep working.
        speech = read_wav("hello_en.wav") + silence(1000)
        for ws in (ws1, ws2):
            await stream_pcm(ws, speech, realtime=False, frame=3200)
        for got in (got1, got2):
            for _ in range(300):
                if got.finals:
                    break
                await asyncio.sleep(0.05)
            assert got.finals, got.messages
            assert not [m for m in got.messages if m["type"] == "error"]

        # Capacity comes back when a producer leaves; the refused token still works.
        await ws1.close()
        await asyncio.wait_for(readers[0], 10)
        for _ in range(100):
            async with httpx.AsyncClient(base_url=a.url) as c:
                state = (
                    await c.get(
                        f"/api/sessions/{first['sessionId']}", headers={"x-tenant-key": key}
                    )
                ).json()
            if not state["ingestConnected"]:
                break
            await asyncio.sleep(0.05)
        async with websockets.connect(f"{a.ws_url}/ws/stt?token={third['ingestToken']}") as ws3:
            ready = json.loads(await asyncio.wait_for(ws3.recv(), 10))
            assert ready["type"] == "ready"
            await ws3.send(json.dumps({"type": "stop"}))
        await ws2.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(readers[1], 10)
        assert got2.messages[-1]["type"] == "session-end"

        # The viewer on B got the first session's final; nothing crashed.
        async with a.client() as c:
            await c.delete(f"/api/sessions/{first['sessionId']}", headers={"x-tenant-key": key})
        seen = await asyncio.wait_for(watching, 20)
        assert [m["seq"] for m in seen.finals] == [m["seq"] for m in got1.finals]
        for node in (a, b):
            assert node.proc.poll() is None
            async with node.client() as c:
                assert (await c.get("/healthz")).status_code == 200
