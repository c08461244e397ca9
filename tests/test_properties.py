"""Property-based tests (Hypothesis) of every surface a client reaches.

Whatever a caller sends (any JSON body, path id, query parameter, header, declared
length, signed token claims, WebSocket frame), with or without valid credentials, the
server answers below 500; every REST error is the envelope ``{"error":{"code",
"message"}}`` with a known code; no answer shows a traceback or a database driver's text;
a stream or socket is never cut without its end (a complete body, a close frame).

One server per database (SQLite and PostgreSQL) serves the whole module; each test
makes its own tenants and session. Runs are reproducible (``derandomize``) and bounded
(``max_examples`` per test), so the file takes well under two minutes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
import pytest_asyncio
from conftest import ADMIN, Running, make_settings, run_server
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from rest_helpers import client, create_session, create_tenant, jwt_claims
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mcustt import wire
from mcustt.bodies import MAX_BODY
from mcustt.store.db import migrate
from mcustt.wire import REQUEST_BODIES, ErrorCode

pytestmark = pytest.mark.asyncio(loop_scope="module")

JWT_SECRET = "property-tests-jwt-secret-0123456789abcdef"
ERROR_CODES = frozenset(code.value for code in ErrorCode)
#: Text that only an unhandled exception or a leaked driver error puts in an answer.
LEAK_MARKERS = ("traceback", "sqlalchemy", "psycopg", 'file "/', "sqlite3.")
#: A Python exception's class name (``OverflowError``, ``DataError``…) in an answer is
#: an exception's text shown to a client.
EXCEPTION_NAME = re.compile(r"\b(?:[A-Z][a-z0-9]+)+(?:Error|Exception)\b")


def leaks(text: str, sent: str = "") -> list[str]:
    """What in ``text`` only an unhandled exception or a driver puts there (and the
    request did not carry: an echoed input is no leak)."""
    lowered, given = text.lower(), sent.lower()
    found = [m for m in LEAK_MARKERS if m in lowered and m not in given]
    return found + [m for m in EXCEPTION_NAME.findall(text) if m not in sent]


def fuzz(max_examples: int) -> settings:
    """Bounded, reproducible runs against a live server (no deadline: a request's
    latency is the server's, not the test's; fixtures are reused across examples on
    purpose: one server and one world per test)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# -- strategies ------------------------------------------------------------------------------

#: Characters a database, a header or a log line may choke on, mixed into generated text.
NASTY = (
    "\x00",
    "\ud800",  # a lone surrogate (escaped in JSON; invalid in UTF-8)
    "\udfff",
    "%00",
    "\n",
    "\r\n",
    "'",
    '"',
    "\\",
    ";",
    "é",
    "\U0001d11e",
    "\u202e",
    "\ufeff",
    "../",
)
TEXT: st.SearchStrategy[str] = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=30),
    st.lists(st.sampled_from(NASTY) | st.text(max_size=5), max_size=6).map("".join),
)
BIG = (2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**40, 10**400)
INTS: st.SearchStrategy[int] = st.one_of(st.integers(), st.sampled_from(BIG))
FLOATS: st.SearchStrategy[float] = st.floats(allow_nan=True, allow_infinity=True)
LEAVES: st.SearchStrategy[Any] = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
JSON: st.SearchStrategy[Any] = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
#: Integers as a client writes them in a query or a header (and what is not one).
INT_TEXT: st.SearchStrategy[str] = st.one_of(
    INTS.map(str),
    st.sampled_from(["", "-1", "1e3", "0x10", " 1", "1 ", "+1", "١٢", "NaN", "9" * 5000]),
    TEXT,
)

#: Strings near the shape of an origin, and past it (newlines, quotes, IDN, paths).
ORIGIN_LIKE: st.SearchStrategy[str] = st.one_of(
    st.from_regex(wire.ORIGIN_PATTERN, fullmatch=True),
    st.tuples(
        st.sampled_from(["https://", "http://", "ftp://", "", "https:///"]),
        st.sampled_from(
            ["example.com", "ex-ample.co.uk", "bücher.de", "[::1]", "127.0.0.1", "a" * 300, ""]
        ),
        st.sampled_from(["", ":8443", ":99999", ":", "/", "/path"]),
        st.sampled_from(["", "\n", "\r\n", ";", "'", '"', " ", "\x00", "; script-src *", ","]),
    ).map("".join),
    TEXT,
)
ALLOWED_ORIGINS: st.SearchStrategy[Any] = st.one_of(
    st.lists(ORIGIN_LIKE, max_size=3), st.just(["*"]), JSON
)


def _model_body(model: type[wire.Body]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of ``model``'s fields, each a plausible value or any JSON
    (a wrong type, a huge number, a string with NUL)."""
    return st.fixed_dictionaries(
        {}, optional={name: st.one_of(_plausible(name), JSON) for name in model.model_fields}
    )


def _plausible(name: str) -> st.SearchStrategy[Any]:
    if name in ("maxSessions", "dailyMinutesCap", "fromSeq", "toSeq"):
        return INTS
    if name == "allowedOrigins":
        return ALLOWED_ORIGINS
    if name == "brand":
        return _model_body(wire.Brand)
    if name == "subtitles":
        return st.lists(_model_body(wire.Subtitle), max_size=3)
    if name == "want":
        return st.lists(st.sampled_from(["summary", "transcript", "x"]), max_size=3)
    if name in ("autoDetect", "disabled"):
        return st.booleans()
    if name == "sourceLang":
        return st.sampled_from(["en-US", "fr", "zz-ZZZZZZZZZ"]) | TEXT
    if name == "accentColor":
        return st.sampled_from(["#0b5", "#00bb55", "red"]) | TEXT
    if name == "logoUrl":
        return st.sampled_from(["https://x.test/a.png"]) | TEXT.map("https://".__add__)
    return TEXT


BODY_VALUES: st.SearchStrategy[Any] = st.one_of(
    *[_model_body(model) for model in REQUEST_BODIES], JSON
)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


#: Bodies no JSON encoder writes: deep nesting, NaN, huge numbers, bytes, bad UTF-8.
RAW_BODIES: st.SearchStrategy[bytes] = st.one_of(
    st.builds(
        _nested, st.sampled_from([50, 1000, 5000, 100_000]), st.sampled_from(["array", "object"])
    ),
    st.sampled_from(
        [
            b"NaN",
            b"Infinity",
            b'{"title": NaN}',
            b'{"fromSeq": Infinity}',
            b'{"maxSessions": -Infinity, "name": "x"}',
            b'{"name": "a\\u0000b"}',
            b'{"title": "\\ud800"}',
            b'{"name": "\xed\xa0\x80"}',
            b'{"name": "\xff"}',
            b"1" * 5000,
            b'{"fromSeq": ' + b"9" * 30 + b"}",
            b'{"a": 1, "a": 2}',
            b"\xef\xbb\xbf{}",
            b"",
            b"   ",
            b"null",
            b"[]",
        ]
    ),
    st.binary(max_size=200),
)


def header_safe(raw: bytes) -> bytes:
    """``raw`` made a value h11 sends (no control characters, no outer whitespace);
    obs-text bytes (0x80-0xff) stay."""
    return bytes(b if 0x20 <= b != 0x7F else 0x41 for b in raw).strip(b" \t")


def header_text(text: str) -> bytes:
    return header_safe(text.encode("utf-8", "surrogatepass"))


#: Header values, including obs-text bytes and very long ones.
HEADER_BYTES: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=60).map(header_safe),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(str.encode),
    TEXT.map(header_text),
    st.sampled_from([b"x" * 9000, b"Bearer", b"Bearer ", b"bearer  x", b"Basic YTpi"]),
).map(header_safe)

SDP_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
)


# -- the servers and the world of one test ------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """One server per database for the module (the db_url kinds of conftest)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('properties')}/mcustt.db"
        migrate(url)
    else:
        url = str(request.getfixturevalue("pg_url"))
    settings_ = make_settings(
        url,
        jwt_secret=JWT_SECRET,
        # Every example comes from 127.0.0.1: the limits would otherwise answer 429
        # for most of them (the limits have tests of their own).
        rate_create_session="1000000/minute",
        rate_summarize="1000000/minute",
        rate_ws_upgrade="1000000/minute",
        max_concurrent_ingest=10_000,
        job_poll_s=0.05,
    )
    async with run_server(settings_) as running:
        yield running


@dataclass
class World:
    """A tenant with a live session, a second tenant (the admin routes' target) with a
    session of its own, and a client."""

    srv: Running
    c: httpx.AsyncClient
    tenant: wire.TenantWithKey
    session: wire.SessionCreated
    victim: wire.TenantWithKey
    victim_session: wire.SessionCreated
    sent: list[str] = field(default_factory=list)

    @property
    def sid(self) -> str:
        return self.session["sessionId"]

    @property
    def victim_key(self) -> dict[str, str]:
        return {"x-tenant-key": self.victim["apiKey"]}

    def credentials(self, kind: str) -> dict[str, str]:
        """Headers carrying one kind of credential (or none, or a wrong one)."""
        return {
            "none": {},
            "admin": {"authorization": f"Bearer {ADMIN}"},
            "tenant": {"x-tenant-key": self.tenant["apiKey"]},
            "other-tenant": {"x-tenant-key": self.victim["apiKey"]},
            "owner": {"x-owner-secret": self.session["ownerSecret"]},
            "read": {"authorization": f"Bearer {self.session['embedToken']}"},
            "garbage": {"x-tenant-key": "sk_mcustt_nope", "authorization": "Bearer x.y.z"},
        }[kind]


CREDENTIALS = st.sampled_from(
    ["none", "admin", "tenant", "other-tenant", "owner", "read", "garbage"]
)


@pytest_asyncio.fixture(loop_scope="module")
async def world(srv: Running) -> AsyncIterator[World]:
    async with client(srv) as c:
        c.timeout = httpx.Timeout(15)
        tenant = await create_tenant(c, maxSessions=100_000)
        session = await create_session(c, tenant["apiKey"], title="properties")
        victim = await create_tenant(c, maxSessions=100_000)
        victim_session = await create_session(c, victim["apiKey"])
        yield World(srv, c, tenant, session, victim, victim_session)


# -- answers and the invariant ---------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes


def check(answer: Answer, what: str, sent: str = "") -> None:
    """The invariant of every answer: below 500, no leaked internals, the envelope for
    every error. ``sent`` is what the request carried (an echoed input is no leak)."""
    text = answer.body.decode("utf-8", "replace")
    shown = f"{what}\n  -> {answer.status} {answer.headers.get('content-type')}: {text[:600]!r}"
    assert answer.status < 500, f"server error: {shown}"
    assert not leaks(text, sent), f"leaked {leaks(text, sent)}: {shown}"
    if answer.status >= 400:
        assert answer.headers.get("content-type", "").startswith("application/json"), (
            f"error without the envelope: {shown}"
        )
        try:
            doc = json.loads(answer.body)
        except ValueError:
            raise AssertionError(f"error body is not JSON: {shown}") from None
        assert isinstance(doc, dict) and set(doc) == {"error"}, f"not the envelope: {shown}"
        err = doc["error"]
        assert isinstance(err, dict) and {"code", "message"} <= set(err), f"envelope: {shown}"
        assert err["code"] in ERROR_CODES, f"unknown code: {shown}"
        assert isinstance(err["message"], str) and err["message"], f"no message: {shown}"


async def fetch(
    c: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, Any] | None = None,
    content: bytes | None = None,
    params: dict[str, str] | None = None,
) -> tuple[Answer, str]:
    """Send one request; an event stream is read for a moment (then left), any other
    body in full. A connection cut mid-answer is a failure: it is what a crash looks
    like from the outside. Returns the answer and a description of the request."""
    what = f"{method} {url} params={params!r} headers={headers!r} body={(content or b'')[:300]!r}"
    request = c.build_request(method, url, headers=headers, content=content, params=params)
    try:
        response = await c.send(request, stream=True)
    except httpx.TransportError as exc:
        raise AssertionError(f"no answer ({exc!r}): {what}") from None
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            body = await _read_briefly(response, what)
        else:
            body = await response.aread()
    except httpx.TransportError as exc:
        raise AssertionError(f"answer cut ({exc!r}): {what}") from None
    finally:
        await response.aclose()
    return Answer(response.status_code, response.headers, body), what


async def _read_briefly(response: httpx.Response, what: str, linger: float = 0.15) -> bytes:
    """The start of an event stream: its first chunk (the ``ready`` event), then what
    comes within ``linger`` seconds (a replay)."""
    body = bytearray()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10) as deadline:
            async for chunk in response.aiter_raw():
                if not body:
                    deadline.reschedule(asyncio.get_running_loop().time() + linger)
                body += chunk
                if len(body) > 256 * 1024:
                    break
    assert body.startswith(b"event: ready"), f"stream without its ready event: {what}"
    # The stream's own 5xx: an error event saying the server failed.
    assert b'"code":"INTERNAL"' not in body, f"stream failed on the server: {what}: {body!r}"
    return bytes(body)


def _sent(*parts: Any) -> str:
    return " ".join(repr(p) for p in parts)


# -- JSON bodies -------------------------------------------------------------------------------

BODY_ROUTES = (
    ("POST", "/api/admin/tenants"),
    ("PATCH", "/api/admin/tenants/{victim}"),
    ("POST", "/api/sessions"),
    ("POST", "/api/sessions/{sid}/embed-token"),
    ("POST", "/api/sessions/{sid}/ingest-token"),
    ("POST", "/api/sessions/{sid}/summarize"),
    ("PATCH", "/api/sessions/{sid}/lines/1"),
    ("DELETE", "/api/sessions/{sid}"),
    ("POST", "/api/transcribe-summary"),
    ("POST", "/api/webrtc"),
    ("POST", "/api/tts"),
)


def _route(world: World, template: str) -> str:
    return template.format(
        sid=world.sid,
        victim=world.victim["tenantId"],
        victim_sid=world.victim_session["sessionId"],
    )


# The classes the issue names, always tried (beside what the generator finds): deep
# nesting without credentials, NaN, NUL, lone surrogates, a seq past 64 bits.
@example(
    ("POST", "/api/sessions/{sid}/embed-token"),
    "none",
    None,
    b"[" * 100_000,
    "ascii",
    False,
    "application/json",
)
@example(
    ("POST", "/api/sessions"),
    "tenant",
    {"title": float("nan")},
    None,
    "ascii",
    False,
    "application/json",
)
@example(
    ("POST", "/api/sessions"),
    "tenant",
    {"title": "a\x00b"},
    None,
    "ascii",
    False,
    "application/json",
)
@example(
    ("POST", "/api/admin/tenants"),
    "admin",
    {"name": "\ud800"},
    None,
    "utf-8",
    False,
    "application/json",
)
@example(
    ("POST", "/api/sessions/{sid}/summarize"),
    "owner",
    {"fromSeq": 2**64},
    None,
    "ascii",
    True,
    "application/json",
)
@example(
    ("POST", "/api/transcribe-summary"),
    "tenant",
    {"subtitles": [{"text": "x", "ts": float("inf")}]},
    None,
    "ascii",
    False,
    "application/json",
)
@example(
    ("PATCH", "/api/sessions/{sid}/lines/1"),
    "tenant",
    {"text": "a\ud800b"},
    None,
    "utf-8",
    False,
    "application/json",
)
@fuzz(40)
@given(
    route=st.sampled_from(BODY_ROUTES),
    creds=CREDENTIALS,
    value=BODY_VALUES,
    raw=st.none() | RAW_BODIES,
    encoding=st.sampled_from(["ascii", "utf-8"]),
    owner_in_body=st.booleans(),
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8"])
    | st.sampled_from(["text/plain", "application/sdp", ""]),
)
async def test_any_body_on_any_body_route(
    world: World,
    route: tuple[str, str],
    creds: str,
    value: Any,
    raw: bytes | None,
    encoding: str,
    owner_in_body: bool,
    content_type: str,
) -> None:
    """Any JSON (wrong types for every field of every request model, NaN, huge
    numbers, NUL and lone surrogates, deep nesting) or any bytes, with each credential."""
    method, template = route
    headers = world.credentials(creds)
    if creds == "owner" and owner_in_body and isinstance(value, dict):
        value = {**value, "ownerSecret": headers.pop("x-owner-secret")}
    if raw is None:
        # ensure_ascii escapes NUL and lone surrogates; without it a lone surrogate
        # goes out as the invalid UTF-8 a careless client would send.
        text = json.dumps(value, ensure_ascii=encoding == "ascii")
        raw = text.encode("utf-8", "surrogatepass")
    if content_type:
        headers["content-type"] = content_type
    answer, what = await fetch(
        world.c, method, _route(world, template), headers=headers, content=raw
    )
    check(answer, what, _sent(value, raw))
    if creds == "other-tenant" and "{sid}" in template:
        # Tenant isolation: another tenant's key opens nothing of this session.
        assert answer.status >= 400, f"another tenant's key was accepted: {what}"


# -- path ids ----------------------------------------------------------------------------------

ID_ROUTES = (
    ("GET", "/api/sessions/{id}"),
    ("DELETE", "/api/sessions/{id}"),
    ("POST", "/api/sessions/{id}/embed-token"),
    ("POST", "/api/sessions/{id}/ingest-token"),
    ("GET", "/api/sessions/{id}/transcript"),
    ("GET", "/api/sessions/{id}/summary"),
    ("POST", "/api/sessions/{id}/summarize"),
    ("GET", "/api/sessions/{id}/lines/1"),
    ("PATCH", "/api/sessions/{id}/lines/1"),
    ("GET", "/api/sessions/{id}/stream"),
    ("GET", "/embed/{id}"),
    ("GET", "/embed-assets/{id}"),
    ("GET", "/api/jobs/{id}"),
    ("GET", "/api/admin/tenants/{id}"),
    ("PATCH", "/api/admin/tenants/{id}"),
    ("POST", "/api/admin/tenants/{id}/disable"),
    ("POST", "/api/admin/tenants/{id}/rotate-key"),
    ("DELETE", "/api/webrtc/{id}"),
    ("PATCH", "/api/webrtc/{id}"),
    ("GET", "/api/tts/{id}"),
    ("GET", "/media/tts/{id}.ogg"),
)
#: Ids already percent-encoded (sent as they are), beside any text (encoded here).
RAW_IDS = st.sampled_from(
    ["%00", "a%00b", "%2F", "%2e%2e", "%FF", "%ED%A0%80", "%", "%zz", "%0A", "+", "%20"]
)
IDS: st.SearchStrategy[str] = st.one_of(
    RAW_IDS,
    TEXT.filter(bool).map(lambda s: quote(s, safe="", errors="surrogatepass")),
    st.text(st.characters(codec="ascii"), min_size=1, max_size=12).map(lambda s: quote(s, safe="")),
    st.integers(min_value=1, max_value=8000).map(lambda n: "x" * n),
    st.sampled_from(["tn_" + "A" * 16, "A" * 10, "job_x", "0", "-1", "null", "..."]),
)


@example("%00", "none", True)
@example("a%00b", "tenant", False)
@example("x" * 8000, "owner", True)
@fuzz(30)
@given(session_id=IDS, creds=CREDENTIALS, with_body=st.booleans())
async def test_any_path_id_on_every_route(
    world: World, session_id: str, creds: str, with_body: bool
) -> None:
    """An id that cannot exist (NUL, `%2F`, bad UTF-8, 8,000 characters…) is a 4xx on
    every route that takes one, with every credential."""
    headers = world.credentials(creds)
    # Routes that read a JSON body get an owner secret in it too (the body-first path).
    body = json.dumps({"ownerSecret": world.session["ownerSecret"]}).encode()
    for method, template in ID_ROUTES:
        answer, what = await fetch(
            world.c,
            method,
            template.replace("{id}", session_id),
            headers={**headers, "content-type": "application/json"},
            content=body if with_body and method != "GET" else None,
        )
        check(answer, what, session_id)


# -- query parameters --------------------------------------------------------------------------

QUERY_ROUTES = (
    "/api/sessions",
    "/api/sessions/{sid}",
    "/api/sessions/{sid}/transcript",
    "/api/sessions/{sid}/summary",
    "/api/sessions/{sid}/stream",
    "/api/jobs/job_nope",
    "/embed/{sid}",
    "/api/admin/tenants",
)


@example("/api/sessions/{sid}/stream", "none", {"lastEventId": str(2**64)}, "embed", "t", "")
@example("/api/sessions/{sid}/stream", "none", {"lastEventId": str(2**31)}, "embed", "t", "")
@example("/api/sessions/{sid}/summary", "none", {}, "embed", "t", "")
@example("/api/sessions", "tenant", {"status": "\x00"}, "none", "t", "")
@fuzz(30)
@given(
    route=st.sampled_from(QUERY_ROUTES),
    creds=CREDENTIALS,
    query=st.fixed_dictionaries(
        {},
        optional={
            "lastSeq": INT_TEXT,
            "lastEventId": INT_TEXT,
            "fromSeq": INT_TEXT,
            "format": st.sampled_from(["json", "srt", "vtt", "txt", "JSON", "pdf"]) | TEXT,
            "status": st.sampled_from(["live", "ended", "all"]) | TEXT,
            "title": TEXT,
            "theme": TEXT,
            "fontSize": INT_TEXT,
            "wait": TEXT,
        },
    ),
    token_kind=st.sampled_from(["none", "embed", "subscribe", "ingest", "junk"]),
    token_name=st.sampled_from(["t", "token"]),
    junk=TEXT,
)
async def test_any_query_on_every_reading_route(
    world: World,
    route: str,
    creds: str,
    query: dict[str, str],
    token_kind: str,
    token_name: str,
    junk: str,
) -> None:
    """Any value of every query parameter (numbers past 64 bits, NUL, text where a
    number belongs), with a read token in ``t``/``token`` or another credential."""
    params = {k: v for k, v in query.items()}
    if token_kind != "none":
        params[token_name] = {
            "embed": world.session["embedToken"],
            "subscribe": world.session["subscribeToken"],
            "ingest": world.session["ingestToken"],
            "junk": junk,
        }[token_kind]
    # httpx would refuse to encode a lone surrogate: the client sends it as bad UTF-8.
    encoded = urlencode(
        {k: v.encode("utf-8", "surrogatepass") for k, v in params.items()}, quote_via=quote
    )
    answer, what = await fetch(
        world.c, "GET", _route(world, route) + "?" + encoded, headers=world.credentials(creds)
    )
    check(answer, what, _sent(params))


# -- headers -----------------------------------------------------------------------------------

HEADER_ROUTES = (
    ("GET", "/api/sessions"),
    ("POST", "/api/sessions"),
    ("GET", "/api/sessions/{sid}"),
    ("DELETE", "/api/sessions/{victim_sid}"),
    ("POST", "/api/sessions/{sid}/embed-token"),
    ("GET", "/api/sessions/{sid}/transcript"),
    ("GET", "/api/sessions/{sid}/summary"),
    ("POST", "/api/sessions/{sid}/summarize"),
    ("GET", "/api/sessions/{sid}/stream"),
    ("POST", "/api/transcribe-summary"),
    ("POST", "/api/webrtc"),
    ("GET", "/embed/{sid}"),
    ("GET", "/api/admin/tenants"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
)


@example(
    ("GET", "/api/sessions/{sid}/stream"), {"last-event-id": str(2**64).encode()}, {"read"}, b""
)
@example(
    ("GET", "/api/sessions/{sid}/summary"), {"origin": b"https://elsewhere.example"}, {"read"}, b""
)
@fuzz(40)
@given(
    route=st.sampled_from(HEADER_ROUTES),
    fuzzed=st.fixed_dictionaries(
        {},
        optional={
            "x-tenant-key": HEADER_BYTES,
            "authorization": HEADER_BYTES | HEADER_BYTES.map(b"Bearer ".__add__).map(header_safe),
            "origin": ORIGIN_LIKE.map(header_text) | HEADER_BYTES,
            "last-event-id": INT_TEXT.map(header_text),
            "idempotency-key": HEADER_BYTES,
            "x-owner-secret": HEADER_BYTES,
            "x-request-id": HEADER_BYTES,
            "content-type": st.sampled_from(
                [b"application/json", b"application/sdp", b"text/plain", b"multipart/x"]
            )
            | HEADER_BYTES,
            "accept": HEADER_BYTES,
        },
    ),
    valid=st.sets(st.sampled_from(["tenant", "read", "admin", "origin", "owner"])),
    body=st.sampled_from([b"", b"{}", b'{"text":"Hello there. We decided to ship."}'])
    | st.just(SDP_OFFER.encode()),
)
async def test_any_header_on_every_route(
    world: World,
    route: tuple[str, str],
    fuzzed: dict[str, bytes],
    valid: set[str],
    body: bytes,
) -> None:
    """Any value of the headers the server reads (credentials, Origin, Last-Event-ID,
    Idempotency-Key, Content-Type…), some of them replaced by valid ones."""
    headers: dict[str, Any] = dict(fuzzed)
    if "tenant" in valid:
        headers["x-tenant-key"] = world.tenant["apiKey"]
    if "read" in valid:
        headers["authorization"] = f"Bearer {world.session['embedToken']}"
    if "admin" in valid:
        headers["authorization"] = f"Bearer {ADMIN}"
    if "owner" in valid:
        headers["x-owner-secret"] = world.session["ownerSecret"]
    if "origin" in valid:
        headers["origin"] = "https://embedder.example"
    method, template = route
    answer, what = await fetch(
        world.c,
        method,
        _route(world, template),
        headers=headers,
        content=body if method != "GET" else None,
    )
    check(answer, what, _sent(headers))


# -- declared lengths --------------------------------------------------------------------------


async def raw_http(srv: Running, request: bytes, *, wait: float) -> Answer | None:
    """Write ``request`` as it is on a fresh connection; the first answer, or None when
    none came within ``wait`` seconds (the server may rightly wait for a promised body)."""
    host, port = srv.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        try:
            async with asyncio.timeout(wait):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ")[1])
                pairs = [line.partition(":") for line in lines[1:] if ":" in line]
                headers = httpx.Headers([(name, value.strip()) for name, _, value in pairs])
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return None
        return Answer(status, headers, body)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


JSON_BODY_ROUTES = tuple(r for r in BODY_ROUTES if r[1] != "/api/webrtc")


@fuzz(20)
@given(
    route=st.sampled_from(JSON_BODY_ROUTES),
    creds=st.sampled_from(["none", "tenant", "admin", "garbage"]),
    declared=st.one_of(
        st.integers(min_value=0, max_value=400),
        st.sampled_from([MAX_BODY + 1, 10 * MAX_BODY, 256 * 1024 * 1024, 2**40]),
    ),
    sent=st.binary(max_size=300) | st.just(b'{"title":"x"}'),
)
async def test_declared_length_lies(
    world: World, route: tuple[str, str], creds: str, declared: int, sent: bytes
) -> None:
    """A ``content-length`` over the 2 MB cap is refused with 413 at once, before the
    body is read or a credential looked at; a length shorter or longer than the body
    sent never yields a 5xx."""
    method, template = route
    extra = "".join(f"{k}: {v}\r\n" for k, v in world.credentials(creds).items())
    head = (
        f"{method} {_route(world, template)} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"content-type: application/json\r\ncontent-length: {declared}\r\n{extra}"
        "connection: close\r\n\r\n"
    )
    what = f"{head!r} + {len(sent)} bytes {sent[:80]!r}"
    answer = await raw_http(world.srv, head.encode() + sent, wait=3 if declared > MAX_BODY else 0.3)
    if declared > MAX_BODY:
        assert answer is not None, f"no answer to an over-cap content-length: {what}"
        check(answer, what)
        assert answer.status == 413, f"expected 413: {what} -> {answer.status} {answer.body!r}"
    elif answer is not None:
        check(answer, what, _sent(sent))


# -- signed tokens with any claims -------------------------------------------------------------


CLAIM_NAMES = ("iss", "sub", "tid", "scope", "jti", "iat", "exp", "nbf")
#: Claim values of the right kind of wrong: times past any clock, NaN, numbers as text.
ODD_CLAIMS: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([["embed"], {"scope": "embed"}, [], None, True, 1.5, "1", "", "EMBED", *BIG]),
    FLOATS,
    JSON,
)


def _claims(
    world: World, scope: str, real_jti: bool, changes: dict[str, Any], drop: set[str]
) -> dict[str, Any]:
    """Claims a token of this server would carry, with ``changes`` (odd values) and
    without ``drop``: most tokens pass the signature and reach each claim's check."""
    now = int(time.time())
    jti = jwt_claims(world.session["ingestToken"])["jti"] if real_jti else "j" * 32
    claims = {
        "iss": "mcustt",
        "sub": world.sid,
        "tid": world.tenant["tenantId"],
        "scope": scope,
        "jti": jti,
        "iat": now,
        "exp": now + 3600,
    }
    return {k: v for k, v in {**claims, **changes}.items() if k not in drop}


def sign(claims: dict[str, Any]) -> str:
    """An HS256 JWT of any claims with the server's secret (by hand: PyJWT's encoder
    checks some claim types, and NaN must go out as it is)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signed = (
        b64(b'{"alg":"HS256","typ":"JWT"}')
        + "."
        + b64(json.dumps(claims).encode("utf-8", "surrogatepass"))
    )
    mac = hmac.new(JWT_SECRET.encode(), signed.encode(), hashlib.sha256).digest()
    return signed + "." + b64(mac)


@example("embed", False, {"scope": ["embed"]}, set(), False)
@example("subscribe", False, {"scope": {"a": 1}}, set(), True)
@example("embed", False, {"exp": float("inf")}, set(), False)
@example("embed", False, {"exp": 2**64}, set(), False)
@example("embed", False, {"sub": 12}, set(), False)
@example("embed", False, {"tid": []}, set(), True)
@example("ingest", False, {"jti": {}}, set(), False)
@fuzz(35)
@given(
    scope=st.sampled_from(["embed", "subscribe", "ingest"]),
    real_jti=st.booleans(),
    changes=st.dictionaries(st.sampled_from(CLAIM_NAMES), ODD_CLAIMS, min_size=1, max_size=2),
    drop=st.sets(st.sampled_from(CLAIM_NAMES), max_size=1),
    as_bearer=st.booleans(),
)
async def test_validly_signed_tokens_with_any_claims(
    world: World,
    scope: str,
    real_jti: bool,
    changes: dict[str, Any],
    drop: set[str],
    as_bearer: bool,
) -> None:
    """A token signed with the server's own secret but carrying claims of any type
    (``scope`` a list, ``exp`` infinite, ``sub`` a number…) is refused with 401, never
    a 500, on every surface that takes a token."""
    claims = _claims(world, scope, real_jti, changes, drop)
    token = sign(claims)
    sid = world.sid
    auth = {"authorization": f"Bearer {token}"} if as_bearer else {}
    query = {} if as_bearer else {"t": token}
    for method, path in (
        ("GET", f"/api/sessions/{sid}"),
        ("GET", f"/api/sessions/{sid}/transcript"),
        ("GET", f"/api/sessions/{sid}/summary"),
        ("GET", f"/api/sessions/{sid}/stream"),
    ):
        answer, what = await fetch(world.c, method, path, headers=auth, params=query)
        check(answer, what, _sent(claims))
    answer, what = await fetch(
        world.c,
        "POST",
        "/api/webrtc",
        headers={"authorization": f"Bearer {token}", "content-type": "application/sdp"},
        content=SDP_OFFER.encode(),
    )
    check(answer, what, _sent(claims))
    if answer.status == 201:  # the claims were all valid: hang up the producer
        location = answer.headers["location"]
        check(*(await fetch(world.c, "DELETE", location)))
    for path in ("/ws/subscribe", "/ws/stt"):
        outcome = await ws_probe(world.srv, path, {"token": token})
        outcome.check(_sent(claims))


# -- WebSockets --------------------------------------------------------------------------------


@dataclass
class WsOutcome:
    what: str
    refused: Answer | None = None
    messages: list[Any] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    cut: bool = False  # the connection ended without a close frame from the server

    def check(self, sent: str = "") -> None:
        if self.refused is not None:
            check(self.refused, self.what, sent)
            return
        assert not self.cut, f"socket cut without a close frame: {self.what} {self.messages!r}"
        # 1007: a text frame that is not UTF-8 (the protocol's own close).
        allowed = {1000, 1003, 1007, 1008, 1009, 1013}
        assert self.close_code is None or self.close_code in allowed, (
            f"close {self.close_code} {self.close_reason!r}: {self.what} {self.messages!r}"
        )
        for message in self.messages:
            if isinstance(message, dict) and message.get("type") == "error":
                assert message.get("code") in ERROR_CODES, f"{self.what}: {message!r}"
                assert message["code"] != ErrorCode.INTERNAL, f"{self.what}: {message!r}"
                assert isinstance(message.get("message"), str), f"{self.what}: {message!r}"
                assert not leaks(message["message"], sent), f"leaked: {self.what}: {message!r}"


async def ws_probe(
    srv: Running,
    path: str,
    query: dict[str, str],
    *,
    headers: dict[str, str] | None = None,
    frames: Sequence[str | bytes] = (),
    linger: float = 0.2,
    stop: bool = False,
) -> WsOutcome:
    """Open a socket, send ``frames`` (and ``stop``), read what comes for ``linger``
    seconds or until the server closes; then close from this side."""
    encoded = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in query.items()})
    url = f"{srv.ws_url}{path}?{encoded}"
    outcome = WsOutcome(f"WS {url[:300]} headers={headers!r} frames={[f[:80] for f in frames]!r}")
    try:
        ws = await connect(
            url, additional_headers=headers, open_timeout=5, max_size=None, compression=None
        )
    except InvalidStatus as exc:
        response = exc.response
        outcome.refused = Answer(
            response.status_code,
            httpx.Headers(list(response.headers.raw_items())),
            bytes(response.body),
        )
        return outcome
    except TimeoutError:
        raise AssertionError(f"upgrade never answered: {outcome.what}") from None
    try:
        await _converse(ws, outcome, frames, linger, stop)
    finally:
        await ws.close()
    return outcome


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


async def _converse(
    ws: ClientConnection,
    outcome: WsOutcome,
    frames: Sequence[str | bytes],
    linger: float,
    stop: bool,
) -> None:
    async def read() -> None:
        async for raw in ws:
            try:
                outcome.messages.append(json.loads(raw))
            except ValueError:
                outcome.messages.append(raw)

    reader = asyncio.create_task(read())
    try:
        for frame in [*frames, *(['{"type":"stop"}'] if stop else [])]:
            if isinstance(frame, str) and not _utf8(frame):
                # A text frame that is not UTF-8 (a lone surrogate): sent as its bytes.
                await ws.send(frame.encode("utf-8", "surrogatepass"), text=True)
            else:
                await ws.send(frame)
        await asyncio.wait_for(asyncio.shield(reader), timeout=10 if stop else linger)
    except ConnectionClosed:
        pass
    except TimeoutError:
        if stop:
            raise AssertionError(f"no close after stop: {outcome.what}") from None
    finally:
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await reader
    # Closed (this side has not closed yet), and not by a frame from the server.
    outcome.cut = ws.close_code is not None and ws.protocol.close_rcvd is None
    outcome.close_code = ws.close_code if ws.protocol.close_rcvd is not None else None
    outcome.close_reason = ws.close_reason or ""


@example("subscribe", str(2**64), None)
@example("subscribe", str(2**31), None)
@example("subscribe", "-1", None)
@fuzz(20)
@given(
    token=st.sampled_from(["subscribe", "subscribe", "embed", "ingest", "none"]) | TEXT,
    last_seq=st.one_of(st.none(), st.sampled_from(BIG).map(str), INT_TEXT),
    origin=st.none() | ORIGIN_LIKE.filter(lambda s: s.isascii() and s.isprintable()),
)
async def test_subscribe_socket_with_any_query(
    world: World, token: str, last_seq: str | None, origin: str | None
) -> None:
    """``/ws/subscribe`` with any ``lastSeq`` (past 64 bits, negative, not a number) and
    any token: refused in the envelope, or accepted and then closed with a frame."""
    tokens = {
        "subscribe": world.session["subscribeToken"],
        "embed": world.session["embedToken"],
        "ingest": world.session["ingestToken"],
    }
    query = {"token": tokens.get(token, token)} if token != "none" else {}
    if last_seq is not None:
        query["lastSeq"] = last_seq
    headers = {"origin": origin} if origin else None
    outcome = await ws_probe(world.srv, "/ws/subscribe", query, headers=headers)
    outcome.check(_sent(query))


CONTROL_FRAMES: st.SearchStrategy[str | bytes] = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["ping", "pong", "config", "", "STOP", "stop "]) | TEXT},
        optional={"ts": JSON, "x": JSON},
    ).map(json.dumps),
    JSON.map(json.dumps),
    TEXT,
    st.sampled_from(["{", "[]", "null", '{"type":"ping","ts":' + "9" * 5000 + "}", "x" * 9000]),
    st.binary(max_size=64).map(lambda b: b + b"\x00" * (len(b) % 2)),  # even: PCM
    st.binary(min_size=1, max_size=63).filter(lambda b: len(b) % 2 == 1),
    st.just(b"RIFF" + b"\x00" * 60),
)


@example([], {"title": "a\x00b"})
@example(['{"type":"ping","ts":1e999}', "x" * 9000], {})
@fuzz(15)
@given(
    frames=st.lists(CONTROL_FRAMES, max_size=4),
    query=st.fixed_dictionaries(
        {},
        optional={
            "title": TEXT,
            "sourceLang": st.sampled_from(["en-US", "xx"]) | TEXT,
            "autoDetect": TEXT,
        },
    ),
)
async def test_ingest_socket_with_any_frames(
    world: World, frames: list[str | bytes], query: dict[str, str]
) -> None:
    """The zero-ceremony ``/ws/stt`` (tenant key, session from the query) with any title
    or language, then any control frames and audio: a refusal in the envelope, or a
    socket that ends with a close frame (1000 after ``stop``, 1003, 1009)."""
    outcome = await ws_probe(
        world.srv,
        "/ws/stt",
        query,
        headers={"x-tenant-key": world.tenant["apiKey"]},
        frames=frames,
        stop=True,
    )
    outcome.check(_sent(query, frames))
    if outcome.refused is None:
        assert outcome.messages and outcome.messages[0].get("type") == "ready", outcome.what


# -- summary windows ---------------------------------------------------------------------------


async def _wait_for_job(world: World, job_id: str) -> dict[str, Any] | None:
    """The (victim tenant's) job once it is done, or once an attempt of it has failed
    and it waits for a retry; None while its first attempt has not ended."""
    for _ in range(60):
        answer, what = await fetch(world.c, "GET", f"/api/jobs/{job_id}", headers=world.victim_key)
        check(answer, what)
        doc: dict[str, Any] = json.loads(answer.body)
        if doc["status"] in ("ready", "failed") or (
            doc["status"] == "queued" and doc["attempts"] >= 1
        ):
            return doc
        await asyncio.sleep(0.05)
    return None


@example({"fromSeq": 2**31, "toSeq": 2**31}, "tenant")
@example({"fromSeq": 2**63 - 1, "toSeq": 2**63 - 1}, "tenant")
@example({"fromSeq": 2**64}, "owner")
@fuzz(10)
@given(
    window=st.fixed_dictionaries(
        {}, optional={"fromSeq": st.one_of(INTS, JSON), "toSeq": st.one_of(INTS, JSON)}
    ),
    creds=st.sampled_from(["tenant", "owner"]),
)
async def test_any_summary_window(world: World, window: dict[str, Any], creds: str) -> None:
    """``POST …/summarize`` with any ``fromSeq``/``toSeq``: a 400, or a job whose
    outcome (and the summary's) shows no internal error text; a ready summary stays
    ready whatever became of the regeneration."""
    sid = world.victim_session["sessionId"]
    tenant = world.victim_key
    if creds == "owner":
        window = {**window, "ownerSecret": world.victim_session["ownerSecret"]}
        tenant = {}
    # Ended (idempotent), so it has a summary to keep.
    ended, what = await fetch(world.c, "DELETE", f"/api/sessions/{sid}", headers=world.victim_key)
    check(ended, what)
    read = {"t": world.victim_session["embedToken"]}
    before, what = await fetch(world.c, "GET", f"/api/sessions/{sid}/summary", params=read)
    check(before, what)
    body = json.dumps(window).encode()
    answer, what = await fetch(
        world.c,
        "POST",
        f"/api/sessions/{sid}/summarize",
        headers={**tenant, "content-type": "application/json"},
        content=body,
    )
    check(answer, what, _sent(window))
    if answer.status != 202:
        return
    job = await _wait_for_job(world, json.loads(answer.body)["jobId"])
    if job is None:
        return  # still running: its outcome is the job tests' business
    # A window the API accepted is one the job can work on: no attempt fails on our side.
    assert job["status"] in ("ready", "failed"), f"an attempt failed, retried: {what} {job!r}"
    assert job["status"] == "ready" or not str(job["error"]).startswith("INTERNAL"), (
        f"the job failed on the server: {what} {job!r}"
    )
    assert not leaks(json.dumps(job)), f"leaked internals: {what}: {job!r}"
    after, what = await fetch(world.c, "GET", f"/api/sessions/{sid}/summary", params=read)
    check(after, what, _sent(window))
    if before.status == 200:
        assert after.status == 200, f"a ready summary was lost: {what} after {job!r}"


# -- allowed origins ---------------------------------------------------------------------------


@example(["https://a.example\n"], "https://b.example")
@example(["https://bücher.example"], None)
@example(["https://a.example; script-src *"], None)
@example(["https://a.example'"], "https://a.example")
@fuzz(15)
@given(origins=ALLOWED_ORIGINS, caller=st.none() | ORIGIN_LIKE)
async def test_any_allowed_origins_leave_every_page_working(
    world: World, origins: Any, caller: str | None
) -> None:
    """Whatever ``allowedOrigins`` the admin API accepts, the embed page and every
    origin-checked read of the tenant's session still answer (no 500 from a header
    that cannot be sent, no directive injected into the CSP)."""
    body = json.dumps({"allowedOrigins": origins}).encode("utf-8", "surrogatepass")
    answer, what = await fetch(
        world.c,
        "PATCH",
        f"/api/admin/tenants/{world.victim['tenantId']}",
        headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"},
        content=body,
    )
    check(answer, what, _sent(origins))
    if answer.status != 200:
        return
    stored = json.loads(answer.body)["allowedOrigins"]
    sid, token = world.victim_session["sessionId"], world.victim_session["embedToken"]
    origin_header = {"origin": header_text(caller)} if caller else {}
    page, what = await fetch(world.c, "GET", f"/embed/{sid}", headers=origin_header)
    check(page, what, _sent(origins))
    assert page.status == 200, what
    csp = page.headers["content-security-policy"]
    directives = [d.strip().split(" ")[0] for d in csp.split(";")]
    assert directives == ["default-src", "img-src", "style-src", "frame-ancestors"], (
        f"CSP directives changed by allowedOrigins {stored!r}: {csp!r}"
    )
    for path in ("", "/transcript", "/summary", "/stream"):
        answer, what = await fetch(
            world.c, "GET", f"/api/sessions/{sid}{path}", headers=origin_header, params={"t": token}
        )
        check(answer, what, _sent(origins, caller))
