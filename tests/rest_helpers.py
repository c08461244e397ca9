"""Small helpers for the REST tests: one client per test, tenants and sessions through
the public API, and a check of the error envelope (§15)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import httpx
from conftest import ADMIN, Running

from mcustt import wire

ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN}"}


def client(srv: Running) -> httpx.AsyncClient:
    """A client for the plain-HTTP test server. ``verify=False`` only skips loading the CA
    bundle (no TLS is spoken), which otherwise costs ~0.2 s per client."""
    return srv.client(verify=False)


async def create_tenant(c: httpx.AsyncClient, **body: Any) -> wire.TenantWithKey:
    body.setdefault("name", "Acme " + uuid.uuid4().hex[:6])
    r = await c.post("/api/admin/tenants", json=body, headers=ADMIN_HEADERS)
    assert r.status_code == 201, r.text
    doc: wire.TenantWithKey = r.json()
    return doc


async def create_session(c: httpx.AsyncClient, key: str, **body: Any) -> wire.SessionCreated:
    r = await c.post("/api/sessions", json=body, headers={"x-tenant-key": key})
    assert r.status_code == 201, r.text
    doc: wire.SessionCreated = r.json()
    return doc


def error_of(r: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    """Assert ``r`` is the contract's error envelope with this status (and code)."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    doc = r.json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert isinstance(err.get("code"), str) and err["code"], doc
    assert isinstance(err.get("message"), str) and err["message"], doc
    if code is not None:
        assert err["code"] == code, doc
    result: dict[str, str] = err
    return result


def jwt_claims(token: str) -> dict[str, Any]:
    """The (unverified) payload of a JWT."""
    payload = token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data


async def wait_job(
    c: httpx.AsyncClient, job_id: str, key: str, timeout: float = 30
) -> dict[str, Any]:
    """Poll a job until it is ready or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = (await c.get(f"/api/jobs/{job_id}", headers={"x-tenant-key": key})).json()
        if doc["status"] in ("ready", "failed"):
            return dict(doc)
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")
