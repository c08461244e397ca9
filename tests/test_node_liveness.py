"""Issue 13: a producer claim held by a node that stopped beating is taken over at once;
a live node's claim is still refused (409 ``ALREADY_CONNECTED``), on either database."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets
from conftest import ADMIN, Running, make_settings, new_session, new_tenant, run_server
from wsclients import producer

from mcustt import wire
from mcustt.config import ConfigError, Settings


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Running]:
    """A node on each database; the overload gate is off (a busy CI machine's loop lag
    must not turn the 409 under test into a 503)."""
    settings = make_settings(db_url, max_loop_lag_ms=0, max_recognizer_load=0)
    async with run_server(settings) as running:
        yield running


def stt(srv: Running, token: str) -> str:
    return f"{srv.ws_url}/ws/stt?token={token}"


async def _held_by(
    srv: Running, session_id: str, tenant_id: str, node: str, beat_ago: float
) -> None:
    """Make ``node`` hold the session's producer claim (30 s lease), its last heartbeat
    ``beat_ago`` seconds ago: what a node killed mid-session leaves behind."""
    repo = srv.state.repo
    await repo.beat(node, started_at=time.time() - 60)
    await repo.touch_node(node, time.time() - beat_ago)
    claim = await repo.claim_producer(
        session_id,
        tenant_id=tenant_id,
        jti=None,
        producer_id="prod_" + node,
        lease_s=30,
        max_active=100,
        node_id=node,
    )
    assert claim.outcome == "claimed"


async def _fresh_token(srv: Running, s: wire.SessionCreated) -> str:
    async with srv.client() as c:
        r = await c.post(
            f"/api/sessions/{s['sessionId']}/ingest-token", json={"ownerSecret": s["ownerSecret"]}
        )
    assert r.status_code == 200, r.text
    return str(r.json()["ingestToken"])


async def _metric(srv: Running, name: str) -> float:
    async with httpx.AsyncClient(base_url=srv.url) as c:
        text = (await c.get("/metrics", headers={"authorization": f"Bearer {ADMIN}"})).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_dead_nodes_claim_is_taken_over(server: Running) -> None:
    t = await new_tenant(server)
    s = await new_session(server, t["apiKey"])
    await _held_by(server, s["sessionId"], t["tenantId"], "node_dead1", beat_ago=30)
    async with producer(stt(server, s["ingestToken"])) as (ws, got, task):
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready"
        row = await server.stored_session(s["sessionId"])
        assert row.producer_node == server.state.node_id  # the claim names its node
    assert await _metric(server, "mcustt_producer_takeovers_total") == 1


async def test_live_nodes_claim_is_refused(server: Running) -> None:
    t = await new_tenant(server)
    s = await new_session(server, t["apiKey"])
    await _held_by(server, s["sessionId"], t["tenantId"], "node_alive", beat_ago=0.5)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(stt(server, s["ingestToken"]))
    assert refused.value.response.status_code == 409
    assert json.loads(refused.value.response.body)["error"]["code"] == "ALREADY_CONNECTED"
    # the refusal burned nothing: once the node is silent, the same token connects
    await server.state.repo.touch_node("node_alive", time.time() - 30)
    async with producer(stt(server, s["ingestToken"])) as (ws, got, task):
        assert json.loads(await ws.recv())["type"] == "ready"
    assert await _metric(server, "mcustt_producer_takeovers_total") == 1


async def test_claim_of_an_unknown_node_waits_for_its_lease(server: Running) -> None:
    """No heartbeat row (a node from before this version): absence is not death."""
    t = await new_tenant(server)
    s = await new_session(server, t["apiKey"])
    claim = await server.state.repo.claim_producer(
        s["sessionId"],
        tenant_id=t["tenantId"],
        jti=None,
        producer_id="prod_old",
        lease_s=30,
        max_active=100,
        node_id="node_norow",
    )
    assert claim.outcome == "claimed"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(stt(server, await _fresh_token(server, s)))
    assert refused.value.response.status_code == 409


async def test_dead_nodes_track_claim_is_taken_over(server: Running) -> None:
    repo = server.state.repo
    t = await new_tenant(server)
    s = await new_session(server, t["apiKey"])
    await repo.beat("node_dead2", started_at=time.time() - 60)
    await repo.set_track_jti(s["sessionId"], t["tenantId"], "alice", "jti_unused")
    first = await repo.claim_track(
        s["sessionId"],
        "alice",
        tenant_id=t["tenantId"],
        jti=None,
        producer_id="prod_a",
        lease_s=30,
        max_active=100,
        node_id="node_dead2",
        dead_after_s=6,
    )
    assert first.outcome == "claimed" and first.took_over is None

    async def claim() -> str | None:
        c = await repo.claim_track(
            s["sessionId"],
            "alice",
            tenant_id=t["tenantId"],
            jti=None,
            producer_id="prod_b",
            lease_s=30,
            max_active=100,
            node_id=server.state.node_id,
            dead_after_s=6,
        )
        return c.took_over if c.outcome == "claimed" else "refused"

    assert await claim() == "refused"  # its node is alive
    await repo.touch_node("node_dead2", time.time() - 7)
    assert await claim() == "node_dead2"
    track = await repo.get_track(s["sessionId"], "alice")
    assert track is not None and track.node_id == server.state.node_id


async def test_node_row_lives_with_the_node(server: Running) -> None:
    beat = await server.state.repo.node_heartbeat(server.state.node_id)
    assert beat is not None and time.time() - beat < 30
    assert await _metric(server, "mcustt_node_heartbeat_age_seconds") < 30


def test_heartbeat_must_be_shorter_than_dead_after() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"MCUSTT_NODE_HEARTBEAT_S": "6", "MCUSTT_NODE_DEAD_AFTER_S": "6"})


async def test_dead_nodes_claims_do_not_count_against_the_ingest_cap(server: Running) -> None:
    """A tenant at its concurrent-ingest cap whose producers were on a killed node:
    they reconnect elsewhere one by one, none refused by the dead node's leases."""
    repo = server.state.repo
    t = await new_tenant(server)
    first = await new_session(server, t["apiKey"])
    second = await new_session(server, t["apiKey"])
    await _held_by(server, first["sessionId"], t["tenantId"], "node_dead3", beat_ago=0)

    async def claim(session_id: str) -> str:
        c = await repo.claim_producer(
            session_id,
            tenant_id=t["tenantId"],
            jti=None,
            producer_id="prod_" + session_id,
            lease_s=30,
            max_active=1,
            node_id=server.state.node_id,
            dead_after_s=6,
        )
        return c.outcome

    assert await claim(second["sessionId"]) == "capped"  # its node is alive: it counts
    await repo.touch_node("node_dead3", time.time() - 7)
    assert await claim(second["sessionId"]) == "claimed"


async def test_a_dead_nodes_producer_is_not_reported_connected(server: Running) -> None:
    """The state document's ``ingestConnected`` follows the node's heartbeat, not only
    the lease a killed node leaves behind."""
    t = await new_tenant(server)
    s = await new_session(server, t["apiKey"])

    async def connected() -> bool:
        async with server.client() as c:
            r = await c.get(
                f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": t["apiKey"]}
            )
        assert r.status_code == 200, r.text
        return bool(r.json()["ingestConnected"])

    assert not await connected()
    await _held_by(server, s["sessionId"], t["tenantId"], "node_beating", beat_ago=0.5)
    assert await connected()
    await server.state.repo.touch_node("node_beating", time.time() - 30)  # killed
    assert not await connected()  # its 30 s lease has not run out
