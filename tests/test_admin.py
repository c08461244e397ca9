"""The operator's admin API (§13): tenants, their keys, and who may call it."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from conftest import Running, make_settings, run_server
from rest_helpers import ADMIN_HEADERS, client, create_session, create_tenant, error_of
from sqlalchemy import text

KEY_SHAPE = re.compile(r"^sk_mcustt_[A-Za-z0-9_-]{43,}$")


async def tenant_rows(srv: Running) -> list[dict[str, Any]]:
    async with srv.state.db.engine.connect() as conn:
        rows = await conn.execute(text("SELECT * FROM tenants"))
        return [dict(row._mapping) for row in rows]


async def test_create_tenant_shows_the_key_once_and_stores_only_its_hash(server: Running) -> None:
    body = {
        "name": "Acme",
        "maxSessions": 7,
        "dailyMinutesCap": 600,
        "brand": {
            "brandName": "Acme Live",
            "accentColor": "#0b5",
            "logoUrl": "https://acme.example/logo.png",
        },
        "allowedOrigins": ["https://acme.example"],
    }
    async with client(server) as c:
        created = await create_tenant(c, **body)
        key = created["apiKey"]
        assert KEY_SHAPE.match(key), key
        assert created["note"] == "shown once"
        assert created["name"] == "Acme"
        assert created["maxSessions"] == 7
        assert created["dailyMinutesCap"] == 600
        assert created["brand"] == body["brand"]
        assert created["allowedOrigins"] == ["https://acme.example"]
        assert created["disabled"] is False
        tid = created["tenantId"]

        # The key is never shown again: not when read, not in the list.
        one = await c.get(f"/api/admin/tenants/{tid}", headers=ADMIN_HEADERS)
        listed = await c.get("/api/admin/tenants", headers=ADMIN_HEADERS)
        assert one.status_code == 200 and listed.status_code == 200
        for r in (one, listed):
            assert key not in r.text
            assert key[len("sk_mcustt_") :] not in r.text
            assert "apiKey" not in r.text
        assert one.json()["name"] == "Acme"
        # ...only a short prefix that tells keys apart.
        [mine] = [t for t in listed.json()["tenants"] if t["tenantId"] == tid]
        prefix = mine["keyPrefix"].rstrip("…")
        assert key.startswith(prefix) and len(prefix) < 20

        # The key works.
        await create_session(c, key)

        # A second tenant gets a different key.
        other = await create_tenant(c)
        assert other["apiKey"] != key

    # In the database: only a digest, in no column the key or its secret part.
    [row] = [r for r in await tenant_rows(server) if r["id"] == tid]
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    secret_part = key[len("sk_mcustt_") :]
    for column, value in row.items():
        assert secret_part[:16] not in str(value), f"tenants.{column} holds the key"


async def test_update_tenant(server: Running) -> None:
    async with client(server) as c:
        t = await create_tenant(
            c, brand={"brandName": "Old", "accentColor": "#000", "logoUrl": "https://x.example/l"}
        )
        tid = t["tenantId"]
        r = await c.patch(
            f"/api/admin/tenants/{tid}",
            json={
                "name": "Renamed",
                "maxSessions": 3,
                "dailyMinutesCap": 10,
                "brand": {"accentColor": "#112233", "logoUrl": None},
                "allowedOrigins": ["https://a.example", "http://localhost:3000"],
            },
            headers=ADMIN_HEADERS,
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        assert "apiKey" not in doc
        assert doc["name"] == "Renamed"
        assert doc["maxSessions"] == 3
        assert doc["dailyMinutesCap"] == 10
        # A partial brand changes only the fields it names (null clears one).
        assert doc["brand"] == {"brandName": "Old", "accentColor": "#112233", "logoUrl": None}
        assert doc["allowedOrigins"] == ["https://a.example", "http://localhost:3000"]

        again = await c.get(f"/api/admin/tenants/{tid}", headers=ADMIN_HEADERS)
        assert again.json() == doc
        # New sessions carry the new brand, and the key still works.
        s = await create_session(c, t["apiKey"])
        assert s["brand"] == doc["brand"]


async def test_rotate_key_replaces_the_old_key_at_once(server: Running) -> None:
    async with client(server) as c:
        t = await create_tenant(c)
        old = t["apiKey"]
        s = await create_session(c, old)
        r = await c.post(f"/api/admin/tenants/{t['tenantId']}/rotate-key", headers=ADMIN_HEADERS)
        assert r.status_code == 200, r.text
        new = r.json()["apiKey"]
        assert KEY_SHAPE.match(new) and new != old
        assert r.json()["note"] == "shown once"
        assert new.startswith(r.json()["keyPrefix"].rstrip("…"))

        r = await c.get(f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": old})
        error_of(r, 401)
        r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": old})
        error_of(r, 401)
        # The new key sees the tenant's existing sessions and creates new ones.
        r = await c.get(f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": new})
        assert r.status_code == 200, r.text
        await create_session(c, new)


async def test_disabled_tenant_is_locked_out_until_enabled(server: Running) -> None:
    async with client(server) as c:
        t = await create_tenant(c)
        key, tid = t["apiKey"], t["tenantId"]
        s = await create_session(c, key)
        r = await c.post(f"/api/admin/tenants/{tid}/disable", headers=ADMIN_HEADERS)
        assert r.status_code == 200 and r.json()["disabled"] is True

        r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": key})
        error_of(r, 401, "TENANT_DISABLED")
        sid = s["sessionId"]
        r = await c.get(f"/api/sessions/{sid}", headers={"x-tenant-key": key})
        error_of(r, 401, "TENANT_DISABLED")
        # The tenant's outstanding session credentials stop working too.
        r = await c.get(f"/api/sessions/{sid}", params={"t": s["embedToken"]})
        error_of(r, 401, "TENANT_DISABLED")
        r = await c.get(f"/api/sessions/{sid}/transcript", params={"t": s["subscribeToken"]})
        error_of(r, 401, "TENANT_DISABLED")
        r = await c.post(
            f"/api/sessions/{sid}/ingest-token", json={"ownerSecret": s["ownerSecret"]}
        )
        error_of(r, 401, "TENANT_DISABLED")

        r = await c.patch(
            f"/api/admin/tenants/{tid}", json={"disabled": False}, headers=ADMIN_HEADERS
        )
        assert r.status_code == 200 and r.json()["disabled"] is False
        r = await c.get(f"/api/sessions/{sid}", headers={"x-tenant-key": key})
        assert r.status_code == 200, r.text
        r = await c.get(f"/api/sessions/{sid}", params={"t": s["embedToken"]})
        assert r.status_code == 200, r.text


BAD_BODIES: list[tuple[Any, str]] = [
    ({"name": "A", "brand": {"accentColor": "green"}}, "accentColor"),
    ({"name": "A", "brand": {"accentColor": "#12"}}, "accentColor"),
    ({"name": "A", "brand": {"logoUrl": "javascript:alert(1)"}}, "logoUrl"),
    ({"name": "A", "allowedOrigins": ["acme.example"]}, "allowedOrigins"),
    ({"name": "A", "allowedOrigins": ["https://acme.example/path"]}, "allowedOrigins"),
    ({"name": "A", "maxSessions": 0}, "maxSessions"),
    ({"name": "A", "maxSessions": "many"}, "maxSessions"),
    ({"name": "A", "dailyMinutesCap": -1}, "dailyMinutesCap"),
    ({"name": ""}, "name"),
    ({"maxSessions": 5}, "name"),
    ({}, "name"),
]


async def test_validation_errors_name_the_field(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        before = (await c.get("/api/admin/tenants", headers=ADMIN_HEADERS)).json()["tenants"]
        for body, field in BAD_BODIES:
            r = await c.post("/api/admin/tenants", json=body, headers=ADMIN_HEADERS)
            err = error_of(r, 400, "BAD_REQUEST")
            assert field in err["message"], (body, err)
        r = await c.post("/api/admin/tenants", content=b"", headers=ADMIN_HEADERS)
        error_of(r, 400, "BAD_REQUEST")
        after = (await c.get("/api/admin/tenants", headers=ADMIN_HEADERS)).json()["tenants"]
        assert after == before, "a rejected body created a tenant"

        t = await create_tenant(c, brand={"accentColor": "#abcdef"})
        r = await c.patch(
            f"/api/admin/tenants/{t['tenantId']}",
            json={"brand": {"accentColor": "rgb(1,2,3)"}, "name": "Changed"},
            headers=ADMIN_HEADERS,
        )
        assert "accentColor" in error_of(r, 400, "BAD_REQUEST")["message"]
        r = await c.get(f"/api/admin/tenants/{t['tenantId']}", headers=ADMIN_HEADERS)
        assert r.json()["brand"]["accentColor"] == "#abcdef"
        assert r.json()["name"] == t["name"], "a rejected PATCH changed the tenant"


async def test_unknown_tenant_is_404(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        for method, path, body in [
            ("GET", "/api/admin/tenants/tn_nope", None),
            ("PATCH", "/api/admin/tenants/tn_nope", {"name": "x"}),
            ("POST", "/api/admin/tenants/tn_nope/disable", None),
            ("POST", "/api/admin/tenants/tn_nope/rotate-key", None),
        ]:
            r = await c.request(method, path, json=body, headers=ADMIN_HEADERS)
            error_of(r, 404)


ADMIN_CALLS: list[tuple[str, str, Any]] = [
    ("POST", "/api/admin/tenants", {"name": "Intruder"}),
    ("GET", "/api/admin/tenants", None),
    ("GET", "/api/admin/tenants/{tid}", None),
    ("PATCH", "/api/admin/tenants/{tid}", {"maxSessions": 1000}),
    ("POST", "/api/admin/tenants/{tid}/disable", None),
    ("POST", "/api/admin/tenants/{tid}/rotate-key", None),
    ("GET", "/metrics", None),
]


async def test_admin_calls_need_the_admin_bearer(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        t = await create_tenant(c)
        tid, key = t["tenantId"], t["apiKey"]
        bad_headers = [
            {},
            {"authorization": "Bearer wrong-token"},
            {"authorization": "Bearer"},
            {"authorization": "Basic dGVzdC1hZG1pbi10b2tlbg=="},
            {"authorization": f"Bearer {key}"},
            {"x-tenant-key": key},
        ]
        for method, path, body in ADMIN_CALLS:
            for headers in bad_headers:
                r = await c.request(method, path.format(tid=tid), json=body, headers=headers)
                error_of(r, 401)
        # Nothing was changed by the refused calls.
        r = await c.get(f"/api/admin/tenants/{tid}", headers=ADMIN_HEADERS)
        assert r.json()["disabled"] is False and r.json()["maxSessions"] == t["maxSessions"]
        names = [
            x["name"]
            for x in (await c.get("/api/admin/tenants", headers=ADMIN_HEADERS)).json()["tenants"]
        ]
        assert "Intruder" not in names
        await create_session(c, key)  # the key was not rotated


async def test_admin_api_is_off_without_an_admin_token(sqlite_url: str) -> None:
    async with run_server(make_settings(sqlite_url, admin_token=None)) as srv, client(srv) as c:
        for method, path, body in ADMIN_CALLS:
            for headers in ({}, ADMIN_HEADERS, {"authorization": "Bearer"}):
                r = await c.request(method, path.format(tid="tn_x"), json=body, headers=headers)
                err = error_of(r, 403, "ADMIN_DISABLED")
                assert "MCUSTT_ADMIN_TOKEN" in err["message"]
