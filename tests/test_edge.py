"""The request edge under abuse (issue 12): oversized bodies and heads, JSON the parser
cannot take, text and ids no database can hold, unbounded integers, origins that are
not origins. Every answer is a 4xx in the envelope, never a 5xx or a hanging socket,
on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import Running, make_settings, new_session, new_tenant, run_server, spawn_node
from rest_helpers import ADMIN_HEADERS, client, error_of

from mcustt.store.repo import Repo

HUGE = 256 * 1024 * 1024
CHUNK = 64 * 1024
#: How much the server may grow while refusing a huge body.
RSS_SLACK_KB = 10 * 1024
NUL_TEXT = "a\x00b"
SURROGATE_TEXT = "a\ud800b"


async def _huge_body() -> AsyncIterator[bytes]:
    """256 MB without holding it: the same 64 KB block, again and again."""
    block = b"x" * CHUNK
    for _ in range(HUGE // CHUNK):
        yield block


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _reset_peak(pid: int) -> None:
    """Reset the process's peak RSS to its current RSS (Linux: clear_refs "5")."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


async def _post_huge(c: httpx.AsyncClient, path: str, *, declared: bool) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if declared:
        headers["content-length"] = str(HUGE)
    return await c.post(path, content=_huge_body(), headers=headers)


# -- class 1: bodies capped while they are read ---------------------------------------------


async def test_huge_bodies_are_refused_while_read_with_bounded_memory(
    db_url: str, tmp_path: Path
) -> None:
    """256 MB without credentials, to a tenant route and to an owner-secret route (which
    reads its body to find its credential): 413 in the envelope, declared or chunked
    (once the cap is passed), and the server's peak RSS grows by at most 10 MB. The server is its own process, so the
    measure is the server's alone."""
    env = {"MCUSTT_DATABASE_URL": db_url, "MCUSTT_RECOGNIZER": "null"}
    async with spawn_node(env, tmp_path / "node.log") as node, node.client() as c:
        r = await c.post("/api/admin/tenants", json={"name": "Big"}, headers=ADMIN_HEADERS)
        assert r.status_code == 201, r.text
        key = r.json()["apiKey"]
        r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": key})
        session_id = r.json()["sessionId"]
        routes = ["/api/sessions", f"/api/sessions/{session_id}/ingest-token"]
        # Warm up the paths the refusals take (first-use allocations are not growth).
        for path in routes:
            error_of(await c.post(path, content=b"x" * 3 * 1024 * 1024), 413)
        pid = node.proc.pid
        _reset_peak(pid)
        before = _status_kb(pid, "VmHWM")
        for path in routes:
            for declared in (True, False):
                r = await _post_huge(c, path, declared=declared)
                if path == "/api/sessions" and not declared:
                    # Nothing declared, and the route refuses the missing key before it
                    # reads a byte: 401 is as good (the body is dropped unread).
                    assert r.status_code in (401, 413), r.text
                    continue
                error_of(r, 413, "PAYLOAD_TOO_LARGE")
        grown = _status_kb(pid, "VmHWM") - before
        assert grown <= RSS_SLACK_KB, f"the server grew by {grown} KB"
        # The node still serves, and a body under the cap still works.
        r = await c.post(f"/api/sessions/{session_id}/ingest-token", json={"ownerSecret": "wrong"})
        assert r.status_code in (401, 403), r.text


async def test_body_just_over_the_cap_is_413_on_every_kind_of_route(server: Running) -> None:
    async with client(server) as c:
        t = await new_tenant(server)
        s = await new_session(server, t["apiKey"])
        over = b"{" + b" " * (2 * 1024 * 1024) + b"}"
        for method, path, headers in [
            ("POST", "/api/admin/tenants", {}),
            ("POST", "/api/sessions", {"x-tenant-key": t["apiKey"]}),
            ("DELETE", f"/api/sessions/{s['sessionId']}", {}),
            ("POST", f"/api/sessions/{s['sessionId']}/summarize", {}),
            ("POST", "/api/transcribe-summary", {"x-tenant-key": t["apiKey"]}),
            ("POST", "/api/webrtc", {"content-type": "application/sdp"}),
            ("GET", "/healthz", {}),
        ]:
            r = await c.request(method, path, content=over, headers=headers)
            error_of(r, 413, "PAYLOAD_TOO_LARGE")
        # Exactly at the cap is read (and then judged on its content).
        at_cap = b'{"ownerSecret":"' + b"x" * (2 * 1024 * 1024 - 18) + b'"}'
        assert len(at_cap) == 2 * 1024 * 1024
        r = await c.post(f"/api/sessions/{s['sessionId']}/ingest-token", content=at_cap)
        assert r.status_code in (401, 403), r.text


# -- class 2: JSON the parser cannot take ---------------------------------------------------


async def test_json_the_parser_cannot_take_is_400(server: Running) -> None:
    async with client(server) as c:
        t = await new_tenant(server)
        s = await new_session(server, t["apiKey"])
        owner_route = f"/api/sessions/{s['sessionId']}/ingest-token"
        json_type = {"content-type": "application/json"}
        bodies = [
            b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # past Python's recursion
            b'{"a":' + b'{"b":' * 70 + b"1" + b"}" * 70 + b"}",  # past the explicit cap
            b'{"ownerSecret":"x","a":NaN}',
            b'{"ownerSecret":"x","a":Infinity}',
            b'{"ownerSecret":"x","a":-Infinity}',
            b'{"ownerSecret":"x","a":1e999}',
        ]
        for body in bodies:
            # Without credentials: the owner-secret route parses before it authenticates.
            error_of(await c.post(owner_route, content=body, headers=json_type), 400)
        # With a tenant key, on a route that stores the whole body (a batch job).
        key = {"x-tenant-key": t["apiKey"]} | json_type
        for extra in (b"NaN", b"Infinity", b"1e999", b"[" * 65 + b"]" * 65):
            body = b'{"text":"hello there.","x":' + extra + b"}"
            r = await c.post("/api/transcribe-summary", content=body, headers=key)
            error_of(r, 400, "BAD_REQUEST")
        # Nesting within the cap is fine.
        body = b'{"text":"hello there.","x":' + b"[" * 60 + b"]" * 60 + b"}"
        r = await c.post("/api/transcribe-summary", content=body, headers=key)
        assert r.status_code == 200, r.text


# -- class 3: ids and text no database can hold ------------------------------------------------


async def test_nul_in_a_path_id_is_404_before_any_query(server: Running) -> None:
    async with client(server) as c:
        t = await new_tenant(server)
        s = await new_session(server, t["apiKey"])
        tenant_key = {"x-tenant-key": t["apiKey"]}
        for method, path, headers in [
            ("GET", "/embed/%00", {}),
            ("GET", "/embed/ab%00cd", {}),
            ("GET", "/api/sessions/%00", tenant_key),
            ("GET", "/api/sessions/%00/transcript", tenant_key),
            ("GET", "/api/sessions/%00/summary", tenant_key),
            ("DELETE", "/api/sessions/%00", {"x-owner-secret": s["ownerSecret"]}),
            ("POST", "/api/sessions/%00/ingest-token", {}),
            ("POST", "/api/sessions/%00/embed-token", tenant_key),
            ("GET", "/api/sessions/%00/stream?t=" + s["embedToken"], {}),
            ("GET", "/api/jobs/a%00b", tenant_key),
            ("GET", "/api/admin/tenants/%00", ADMIN_HEADERS),
            ("PATCH", "/api/admin/tenants/tn_%00", ADMIN_HEADERS),
            ("POST", "/api/admin/tenants/%00/disable", ADMIN_HEADERS),
            ("DELETE", "/api/webrtc/%00", {}),
            ("PATCH", "/api/webrtc/%00", {}),
            ("GET", "/embed-assets/%00", {}),
        ]:
            r = await c.request(method, path, headers=headers, json={})
            error_of(r, 404, "NOT_FOUND")
            assert "\x00" not in r.text


async def test_text_no_database_can_store_is_400(server: Running) -> None:
    async with client(server) as c:
        t = await new_tenant(server)
        key = {"x-tenant-key": t["apiKey"]}
        tenant_path = f"/api/admin/tenants/{t['tenantId']}"
        for bad in (NUL_TEXT, SURROGATE_TEXT):
            for method, path, headers, body in [
                ("POST", "/api/admin/tenants", ADMIN_HEADERS, {"name": bad}),
                ("POST", "/api/admin/tenants", ADMIN_HEADERS, {"name": "A", "x": bad}),
                ("PATCH", tenant_path, ADMIN_HEADERS, {"name": bad}),
                ("PATCH", tenant_path, ADMIN_HEADERS, {"brand": {"brandName": bad}}),
                ("POST", "/api/sessions", key, {"title": bad}),
                ("POST", "/api/transcribe-summary", key, {"text": f"hello {bad}."}),
                (
                    "POST",
                    "/api/transcribe-summary",
                    key,
                    {"subtitles": [{"text": "hello.", "speaker": bad}]},
                ),
                ("POST", "/api/transcribe-summary", key, {"text": "hello.", bad: 1}),
            ]:
                content = json.dumps(body).encode()  # \u0000 and \ud800 as JSON escapes
                headers = headers | {"content-type": "application/json"}
                r = await c.request(method, path, headers=headers, content=content)
                error_of(r, 400, "BAD_REQUEST")
        # The tenant is unchanged, and clean text still works.
        r = await c.get(tenant_path, headers=ADMIN_HEADERS)
        assert r.json()["name"] == t["name"]
        r = await c.post("/api/sessions", headers=key, json={"title": "Ünïcode ✓"})
        assert r.status_code == 201, r.text


async def test_nul_title_on_the_zero_ceremony_socket_is_400(server: Running) -> None:
    t = await new_tenant(server)
    url = f"{server.ws_url}/ws/stt?title=a%00b"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, additional_headers={"x-tenant-key": t["apiKey"]}):
            pass
    assert refused.value.response.status_code == 400
    assert json.loads(refused.value.response.body or b"{}")["error"]["code"] == "BAD_REQUEST"
    async with client(server) as c:
        r = await c.get("/api/sessions", headers={"x-tenant-key": t["apiKey"]})
        assert r.json()["sessions"] == []


async def test_nul_title_on_a_whip_offer_is_400(db_url: str) -> None:
    from whipclient import LOOPBACK, make_offer

    settings = make_settings(db_url, webrtc_host_addresses=LOOPBACK)
    async with run_server(settings) as srv, client(srv) as c:
        t = await new_tenant(srv)
        pc, offer = await make_offer()
        try:
            r = await c.post(
                "/api/webrtc",
                params={"title": NUL_TEXT},
                content=offer,
                headers={"content-type": "application/sdp", "x-tenant-key": t["apiKey"]},
            )
        finally:
            await pc.close()
        error_of(r, 400, "BAD_REQUEST")
        r = await c.get("/api/sessions", headers={"x-tenant-key": t["apiKey"]})
        assert r.json()["sessions"] == []


# -- class 4 (bodies): integers within 64 bits -------------------------------------------------


async def test_summary_window_past_64_bits_is_400(server: Running) -> None:
    async with client(server) as c:
        t = await new_tenant(server)
        s = await new_session(server, t["apiKey"])
        key = {"x-tenant-key": t["apiKey"]}
        path = f"/api/sessions/{s['sessionId']}/summarize"
        for window in (
            {"fromSeq": 2**31},  # past the seq column (INTEGER on PostgreSQL)
            {"fromSeq": 2**63},
            {"toSeq": 2**64},
            {"fromSeq": 0, "toSeq": 10**30},
        ):
            error_of(await c.post(path, headers=key, json=window), 400, "BAD_REQUEST")
        r = await c.post(path, headers=key, json={"fromSeq": 2**31 - 1, "toSeq": 2**31 - 1})
        assert r.status_code == 202, r.text
        job = f"/api/jobs/{r.json()['jobId']}"
        for _ in range(100):  # the job runs to an answer, not to a database error
            r = await c.get(job, headers=key)
            if r.json()["status"] in ("ready", "failed"):
                break
            await asyncio.sleep(0.05)
        assert r.json()["status"] == "ready", r.text


# -- class 6: origins parsed strictly ----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "https://a.example\n",
        "https://a.example; script-src *",
        "'https://a.example'",
        '"https://a.example"',
        "https://a.example/path",
        "https://a b.example",
        "ftp://a.example",
        "https://a.example:99999",
        "https://a_b.example",
        "https://bad\u2028.example",
        "",
    ],
)
async def test_an_entry_that_is_not_an_origin_is_400_naming_it(server: Running, bad: str) -> None:
    async with client(server) as c:
        body = {"name": "O", "allowedOrigins": ["https://ok.example", bad]}
        err = error_of(await c.post("/api/admin/tenants", headers=ADMIN_HEADERS, json=body), 400)
        assert "allowedOrigins" in err["message"] and repr(bad) in err["message"]


async def test_origins_are_normalized_and_enforced_and_old_bad_rows_are_skipped(
    server: Running,
) -> None:
    async with client(server) as c:
        t = await new_tenant(
            server,
            allowedOrigins=["https://Bücher.Example", "HTTPS://app.example:443", "http://x:8080"],
        )
        normalized = ["https://xn--bcher-kva.example", "https://app.example", "http://x:8080"]
        assert t["allowedOrigins"] == normalized
        s = await new_session(server, t["apiKey"])
        state = f"/api/sessions/{s['sessionId']}?t={s['embedToken']}"
        for origin in normalized:
            r = await c.get(state, headers={"origin": origin})
            assert r.status_code == 200, (origin, r.text)
        error_of(await c.get(state, headers={"origin": "https://evil.example"}), 403)
        page = await c.get(f"/embed/{s['sessionId']}")
        assert page.status_code == 200
        assert page.headers["content-security-policy"].endswith(
            "frame-ancestors 'self' " + " ".join(normalized)
        )
        # A row stored before origins were validated: the page still works, and the
        # bad entries neither reach the header nor match.
        stored = ["https://ok.example\n", "https://x.example; script-src *", "https://ok.example"]
        await Repo(server.state.db).update_tenant(t["tenantId"], {"allowed_origins": stored})
        page = await c.get(f"/embed/{s['sessionId']}")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert csp.endswith("frame-ancestors 'self' https://ok.example"), csp
        r = await c.get(state, headers={"origin": "https://ok.example"})
        assert r.status_code == 200, r.text
        error_of(await c.get(state, headers={"origin": "https://x.example"}), 403)


# -- class 11: oversized request heads ---------------------------------------------------------


async def _raw_exchange(srv: Running, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request`` on a raw socket; what the server answers before it closes."""
    host, port = srv.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)  # to EOF: it must close
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _upgrade(target: str, extra: str = "") -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


def _status_and_code(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]["code"]


async def test_oversized_request_heads_are_answered_and_closed(server: Running) -> None:
    long = "a" * 9000
    many = "".join(f"X-H{i}: v\r\n" for i in range(200))
    cases = [
        (_upgrade(f"/ws/stt?x={long}"), 414),
        (_upgrade(f"/ws/subscribe?token={long}"), 414),
        (_upgrade("/ws/stt", f"X-Big: {long}\r\n"), 431),
        (_upgrade("/ws/stt", many), 431),
        (f"GET /healthz?x={long} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 414),
        (f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 20_000}\r\n\r\n".encode(), 431),
        (f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 200_000}".encode(), 431),
    ]
    for request, status in cases:
        answer = await _raw_exchange(server, request)
        assert _status_and_code(answer)[0] == status, answer[:200]
    # A request within the bounds is served as before.
    answer = await _raw_exchange(
        server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


async def test_language_codes_longer_than_their_column_are_400(server: Running) -> None:
    """A BCP-47 code of many subtags fits the pattern but not the 35-character column:
    PostgreSQL refused the insert (500) where SQLite stored it. Found by schemathesis."""
    long_code = "CP-TQZYpPV-aBkGH0bR-8Px3Q8xI-Pr95jpN3"  # 36 characters
    async with client(server) as c:
        t = await new_tenant(server)
        key = {"x-tenant-key": t["apiKey"]}
        r = await c.post("/api/sessions", headers=key, json={"sourceLang": long_code})
        error_of(r, 400, "BAD_REQUEST")
        r = await c.post("/api/sessions", headers=key, json={"sourceLang": long_code[:35]})
        assert r.status_code == 201, r.text
