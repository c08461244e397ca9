"""Logs are JSON lines with request / tenant / session ids, and never carry a secret."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from conftest import ADMIN, Running
from rest_helpers import ADMIN_HEADERS, client, create_session, create_tenant
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mcustt import logs, wire


@contextlib.contextmanager
def capture() -> Iterator[io.StringIO]:
    """Everything mcustt logs at info level and above, as written. (Enter it after the
    server started: starting an app configures logging for its own settings.)"""
    stream = io.StringIO()
    logs.configure("info", stream=stream)
    try:
        yield stream
    finally:
        logs.configure("warning")


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    assert lines, "nothing was logged"
    out = []
    for line in lines:
        doc = json.loads(line)  # every line is one JSON object
        assert isinstance(doc, dict) and "event" in doc and "level" in doc, line
        out.append(doc)
    return out


async def session_flow(srv: Running, secrets: list[str]) -> tuple[wire.TenantWithKey, str]:
    """Create, read, rotate, connect, fail, end: every kind of credential passes by.
    Collects each secret it sees into ``secrets``; returns the tenant and session id."""
    secrets.append(ADMIN)
    async with client(srv) as c:
        tenant = await create_tenant(c)
        key = tenant["apiKey"]
        doc = await create_session(c, key, title="Board call")
        sid = doc["sessionId"]
        secrets += [key, doc["ownerSecret"], doc["ingestToken"], doc["embedToken"]]
        secrets += [doc["subscribeToken"]]

        r = await c.get(f"/api/sessions/{sid}", params={"t": doc["embedToken"]})
        assert r.status_code == 200
        r = await c.get(f"/api/sessions/{sid}/transcript", params={"token": doc["subscribeToken"]})
        assert r.status_code == 200
        r = await c.post(
            f"/api/sessions/{sid}/ingest-token", json={"ownerSecret": doc["ownerSecret"]}
        )
        assert r.status_code == 200
        secrets.append(r.json()["ingestToken"])
        ingest_url = r.json()["ingestUrl"]
        r = await c.post(f"/api/sessions/{sid}/embed-token", headers={"x-tenant-key": key})
        secrets += [r.json()["embedToken"], r.json()["subscribeToken"]]
        # The ingest socket: its token rides in the query string of the handshake, which
        # the server (uvicorn) logs, accepted and refused alike.
        async with connect(ingest_url, open_timeout=10) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
        with pytest.raises(InvalidStatus):
            async with connect(ingest_url, open_timeout=10):
                pass
        # Failures log too, and must not echo what they refused.
        r = await c.get(f"/api/sessions/{sid}", headers={"x-tenant-key": key + "x"})
        assert r.status_code == 401
        r = await c.post(f"/api/sessions/{sid}/embed-token", json={"ownerSecret": "guess-" + key})
        assert r.status_code == 401
        r = await c.request(
            "DELETE",
            f"/api/sessions/{sid}",
            json={"ownerSecret": doc["ownerSecret"]},
            headers={"x-request-id": "trace-me-42"},
        )
        assert r.status_code == 200
        assert r.headers["x-request-id"] == "trace-me-42"
        r = await c.post(
            f"/api/admin/tenants/{tenant['tenantId']}/rotate-key", headers=ADMIN_HEADERS
        )
        secrets.append(r.json()["apiKey"])
    return tenant, sid


async def test_a_session_flow_logs_ids_and_no_secrets(sqlite_server: Running) -> None:
    secrets: list[str] = []
    with capture() as captured:
        tenant, sid = await session_flow(sqlite_server, secrets)

    text = captured.getvalue()
    for secret in secrets:
        assert secret not in text, f"a secret reached the logs: {secret[:14]}…"
        # Not even a recognizable part of one (a JWT's signature, a key's random part).
        assert secret[-20:] not in text
    logged = records(captured)

    created = [x for x in logged if x["event"] == "session created"]
    assert len(created) == 1
    assert created[0]["session_id"] == sid and created[0]["tenant_id"] == tenant["tenantId"]
    assert created[0]["request_id"]

    access = [x for x in logged if x["event"] == "request"]
    assert access and all(x.get("request_id") for x in access)
    assert len({x["request_id"] for x in access}) == len(access), "request ids repeat"
    # Every request on the session names it, whichever credential was used...
    on_session = [x for x in access if f"/api/sessions/{sid}" in x["path"]]
    assert len(on_session) >= 7
    assert all(x.get("session_id") == sid for x in on_session), on_session
    # ...and its tenant, once a credential proved which session it is.
    allowed = [x for x in on_session if x["status"] == 200]
    assert len(allowed) >= 5
    assert all(x.get("tenant_id") == tenant["tenantId"] for x in allowed), allowed
    [delete] = [x for x in access if x["method"] == "DELETE"]
    assert delete["request_id"] == "trace-me-42" and delete["status"] == 200
    handshakes = [x for x in logged if "WebSocket /ws/stt" in x["event"]]
    assert len(handshakes) == 2, "the socket handshakes were not logged (as JSON)"
    [ended] = [x for x in logged if x["event"] == "session ended"]
    assert ended["session_id"] == sid and ended["tenant_id"] == tenant["tenantId"]


def test_secret_fields_and_values_are_masked() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl"
    key = "sk_mcustt_" + "k" * 43
    log = structlog.get_logger("mcustt.test")
    with capture() as captured:
        log.info("calling out", api_key="plain-secret-1", owner_secret="plain-secret-2")
        log.info("upstream said", detail=f"rejected {token} and {key} today")
        log.warning("auth", authorization="Bearer plain-secret-3", tokens=["plain-secret-4"])
    text = captured.getvalue()
    for leaked in ("plain-secret-1", "plain-secret-2", "plain-secret-3", "plain-secret-4"):
        assert leaked not in text
    assert token not in text and key not in text
    first, second, third = records(captured)
    assert first["api_key"] == "[redacted]" and first["event"] == "calling out"
    assert second["detail"] == "rejected [redacted] and [redacted] today"
    assert third["level"] == "warning"
