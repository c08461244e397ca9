"""WHIP ingest (``POST /api/webrtc``, §5b): aiortc and Chromium producers into the same
pipeline as ``/ws/stt``, the error statuses, and cleanup of peers that never connect.

Producers and server share this process but not their candidates: both gather on
127.0.0.1 only (``webrtc_host_addresses``), which aioice leaves out by default.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets
from browser import OtherOrigin, launch
from conftest import (
    FIXTURES,
    Running,
    make_settings,
    new_session,
    new_tenant,
    read_wav,
    run_server,
)
from whipclient import close, make_offer, publish, wait_connected

from mcustt.config import Settings

SDP = {"content-type": "application/sdp"}
LOOPBACK = ["127.0.0.1"]


def whip_settings(sqlite_url: str, **overrides: Any) -> Settings:
    return make_settings(sqlite_url, webrtc_host_addresses=LOOPBACK, **overrides)


async def subscribe(srv: Running, token: str, into: list[dict[str, Any]]) -> None:
    """Collect /ws/subscribe events until session-end (replaying persisted finals)."""
    url = f"{srv.ws_url}/ws/subscribe?token={token}&lastSeq=0"
    async with websockets.connect(url) as ws:
        async for raw in ws:
            event = json.loads(raw)
            into.append(event)
            if event.get("type") == "session-end":
                return


def finals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") == "transcript" and e["isFinal"]]


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def claim_released(srv: Running, sid: str) -> bool:
    session = await srv.state.sessions.get(sid)
    return session is not None and session.producer_id is None


# -- the live path -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "words", "hang_up"),
    [
        ("hello_en.wav", {"weekly"}, "close"),
        # Opus at 48 kHz and back: sphinx gets "migration" every run, "friday" not always
        # since utterances end at sentence pauses (issue 17's endpointing)
        ("standup_en.wav", {"migration"}, "delete"),
    ],
    ids=["hello-close", "standup-delete"],
)
async def test_aiortc_producer_to_subscriber(
    sqlite_url: str, fixture: str, words: set[str], hang_up: str
) -> None:
    pcm = read_wav(fixture)
    async with run_server(whip_settings(sqlite_url, recognizer="sphinx")) as srv:
        tenant = await new_tenant(srv)
        doc = await new_session(srv, tenant["apiKey"], title="WHIP")
        async with srv.client() as c:
            pub = await publish(c, pcm, token=doc["ingestToken"])
            assert pub.response.status_code == 201
            assert pub.response.headers["content-type"] == "application/sdp"
            assert pub.location.startswith("/api/webrtc/")
            assert pub.session_id == doc["sessionId"]
            got: list[dict[str, Any]] = []
            sub = asyncio.create_task(subscribe(srv, pub.subscribe_token, got))
            try:
                await wait_connected(pub.pc)
                state = await c.get(
                    f"/api/sessions/{pub.session_id}", headers={"x-tenant-key": tenant["apiKey"]}
                )
                assert state.json()["ingestConnected"] is True
                await asyncio.wait_for(pub.track.finished.wait(), len(pcm) / 32000 + 10)
                await asyncio.sleep(0.3)  # the last packets are in flight
                if hang_up == "delete":
                    r = await c.delete(pub.location)
                    assert r.status_code == 204, r.text
                    # The resource is gone with the peer.
                    assert (await c.delete(pub.location)).status_code == 404
                else:
                    await close(pub.pc)  # RTCP BYE + DTLS close_notify
                await asyncio.wait_for(sub, 30)
            finally:
                sub.cancel()
                await close(pub.pc)

            text = re.findall(r"[\w']+", " ".join(e["text"] for e in finals(got)).lower())
            print(f"{fixture}: {len(finals(got))} finals: {' '.join(text)}")
            assert words <= set(text), (words, text)
            seqs = [e["seq"] for e in finals(got)]
            assert seqs == list(range(1, len(seqs) + 1)), seqs  # the session's gap-free seq
            assert got[-1]["type"] == "session-end"

            # session-end is published before the claim is released: wait for that too.
            await wait_for(lambda: claim_released(srv, pub.session_id), 10, "the release")
            session = await srv.stored_session(pub.session_id)
            assert session.status == "ended" and session.end_reason == "whip-ended"
            # Every millisecond sent arrived (Opus 48 kHz stereo → 16 kHz mono) but the
            # last ~80 ms, which aiortc's jitter buffer still holds at the hang-up.
            sent_ms = len(pcm) / 32
            print(f"{fixture}: sent {sent_ms:.0f} ms, received {session.audio_ms} ms")
            assert abs(session.audio_ms - sent_ms) <= 0.02 * sent_ms, (session.audio_ms, sent_ms)
            lines = await srv.state.repo.lines(pub.session_id)
            assert [line.seq for line in lines] == seqs
            assert not srv.whip.peers and not srv.whip.tasks


# -- refusals -----------------------------------------------------------------------------


def envelope(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    error: dict[str, Any] = r.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


async def test_refusals(sqlite_url: str) -> None:
    async with run_server(whip_settings(sqlite_url)) as srv, srv.client() as c:
        tenant = await new_tenant(srv)
        key = tenant["apiKey"]
        doc = await new_session(srv, key)
        token, sid = doc["ingestToken"], doc["sessionId"]
        pc, offer = await make_offer()
        try:
            post = "/api/webrtc"
            # 415: not application/sdp (checked before anything else).
            r = await c.post(post, params={"token": token}, json={"sdp": offer})
            envelope(r, 415, "UNSUPPORTED_MEDIA_TYPE")
            # 400: not SDP; SDP without a sending audio m-line (data channel only).
            r = await c.post(post, params={"token": token}, content="garbage", headers=SDP)
            envelope(r, 400, "BAD_REQUEST")
            data_pc, data_offer = await make_offer(data_only=True)
            await close(data_pc)
            assert "m=application" in data_offer and "m=audio" not in data_offer
            r = await c.post(post, params={"token": token}, content=data_offer, headers=SDP)
            assert "no audio" in envelope(r, 400, "BAD_REQUEST")["message"]
            recv_only = offer.replace("a=sendonly", "a=recvonly")
            r = await c.post(post, params={"token": token}, content=recv_only, headers=SDP)
            envelope(r, 400, "BAD_REQUEST")
            # 413: an absurd offer.
            r = await c.post(post, params={"token": token}, content="v=0\r\n" + "a" * 70_000)
            envelope(r, 415)  # no content type: still 415 first
            big = "v=0\r\n" + "a=x\r\n" * 20_000
            r = await c.post(post, params={"token": token}, content=big, headers=SDP)
            envelope(r, 413, "PAYLOAD_TOO_LARGE")
            # 401: no credential, a bad token, a subscribe token.
            envelope(await c.post(post, content=offer, headers=SDP), 401)
            r = await c.post(post, params={"token": "nope"}, content=offer, headers=SDP)
            envelope(r, 401, "INVALID_TOKEN")
            r = await c.post(
                post, params={"token": doc["subscribeToken"]}, content=offer, headers=SDP
            )
            envelope(r, 401, "WRONG_TOKEN_SCOPE")
            # 403: a browser on an origin the tenant does not allow; the token survives.
            r = await c.patch(
                f"/api/admin/tenants/{tenant['tenantId']}",
                json={"allowedOrigins": ["https://captions.example"]},
                headers={"authorization": "Bearer test-admin-token"},
            )
            assert r.status_code == 200, r.text
            r = await c.post(
                post,
                params={"token": token},
                content=offer,
                headers=SDP | {"origin": "https://evil.example"},
            )
            envelope(r, 403, "ORIGIN_FORBIDDEN")

            # None of that burned the token or claimed the producer.
            ok = await c.post(
                post,
                params={"token": token},
                content=offer,
                headers=SDP | {"origin": "https://captions.example"},
            )
            assert ok.status_code == 201, ok.text
            assert ok.headers["x-session-id"] == sid
            # 401: the token is single-use.
            r = await c.post(post, params={"token": token}, content=offer, headers=SDP)
            envelope(r, 401, "TOKEN_BURNED")
            # 409: a fresh token while that producer holds the session.
            r = await c.post(
                f"/api/sessions/{sid}/ingest-token", json={"ownerSecret": doc["ownerSecret"]}
            )
            fresh = r.json()["ingestToken"]
            r = await c.post(post, params={"token": fresh}, content=offer, headers=SDP)
            envelope(r, 409, "ALREADY_CONNECTED")
            # PATCH (no trickle ICE / ICE restart): 405; DELETE of an unknown one: 404.
            location = ok.headers["location"]
            r = await c.patch(location, content="a=end-of-candidates", headers=SDP)
            envelope(r, 405, "METHOD_NOT_ALLOWED")
            assert r.headers["allow"] == "DELETE"
            envelope(await c.delete("/api/webrtc/not-a-resource"), 404, "NOT_FOUND")
            # DELETE of a peer that never connected: gone, claim released, session live.
            assert (await c.delete(location)).status_code == 204
            assert await claim_released(srv, sid)
            assert (await srv.stored_session(sid)).status == "live"
            envelope(await c.delete(location), 404)

            # Zero-ceremony: a tenant key (Bearer-less) creates the session.
            r = await c.post(post, content=offer, headers=SDP | {"x-tenant-key": key})
            assert r.status_code == 201, r.text
            created = r.headers["x-session-id"]
            assert created != sid and r.headers["x-subscribe-token"]
            assert (await srv.stored_session(created)).tenant_id == tenant["tenantId"]
            assert (await c.delete(r.headers["location"])).status_code == 204
            # RFC 9725 clients send the token as a Bearer.
            r = await c.post(
                post, content=offer, headers=SDP | {"authorization": f"Bearer {fresh}"}
            )
            assert r.status_code == 201, r.text
            assert (await c.delete(r.headers["location"])).status_code == 204
            assert not srv.whip.peers and not srv.whip.tasks
        finally:
            await close(pc)


async def test_no_usable_address_refuses_before_burning(sqlite_url: str) -> None:
    """A pinned address this host lacks gathers nothing: 503, token and claim untouched."""
    settings = make_settings(sqlite_url, webrtc_host_addresses=["203.0.113.9"])
    async with run_server(settings) as srv, srv.client() as c:
        tenant = await new_tenant(srv)
        doc = await new_session(srv, tenant["apiKey"])
        pc, offer = await make_offer()
        try:
            r = await c.post(
                "/api/webrtc", params={"token": doc["ingestToken"]}, content=offer, headers=SDP
            )
            envelope(r, 503, "UNAVAILABLE")
        finally:
            await close(pc)
        session = await srv.stored_session(doc["sessionId"])
        assert session.ingest_jti is not None and session.producer_id is None
        assert not srv.whip.peers


# -- peers that never connect --------------------------------------------------------------


@pytest.mark.parametrize("client", ["silent", "closed"])
async def test_peer_that_never_connects_is_cleaned_up(sqlite_url: str, client: str) -> None:
    """``silent``: the client never applies the answer, so the server's connectivity
    checks go unanswered until the connect timeout. ``closed``: the client is gone
    (its ports unreachable)."""
    # job_poll_s: the job runner's idle poll would show up as a new task every second.
    settings = whip_settings(sqlite_url, webrtc_connect_timeout_s=1.5, job_poll_s=3600)
    async with run_server(settings) as srv, srv.client() as c:
        tenant = await new_tenant(srv)
        doc = await new_session(srv, tenant["apiKey"])
        sid = doc["sessionId"]
        pc, offer = await make_offer()
        before = asyncio.all_tasks()
        try:
            r = await c.post(
                "/api/webrtc", params={"token": doc["ingestToken"]}, content=offer, headers=SDP
            )
            assert r.status_code == 201, r.text
            assert srv.whip.peers and srv.whip.tasks
            assert not await claim_released(srv, sid)
            if client == "closed":
                await close(pc)
            started = time.monotonic()

            async def cleaned() -> bool:
                return not srv.whip.peers and await claim_released(srv, sid)

            await wait_for(cleaned, 10, "the cleanup")
            elapsed = time.monotonic() - started
            print(f"{client}: cleaned up after {elapsed:.2f} s")
            if client == "silent":
                assert elapsed >= 1.3, elapsed  # by the timeout, not before
            assert not srv.whip.tasks
            session = await srv.stored_session(sid)
            assert session.status == "live" and session.audio_ms == 0  # resumable
            await asyncio.sleep(0.2)
            leaked = [t for t in asyncio.all_tasks() - before if not t.done()]
            leaked = [t for t in leaked if t is not asyncio.current_task()]
            assert not leaked, leaked
            async with srv.client() as c2:
                r = await c2.get(f"/api/sessions/{sid}", headers={"x-tenant-key": tenant["apiKey"]})
            assert r.json()["ingestConnected"] is False
        finally:
            await close(pc)


async def test_session_ended_before_the_peer_connects_hangs_it_up(sqlite_url: str) -> None:
    """The session ends (DELETE) while the server's side of the connection is still
    connecting (on a loaded machine it lags the client's): the peer is hung up and the
    claim released then, not when the connect timeout expires."""
    settings = whip_settings(sqlite_url, webrtc_connect_timeout_s=30)
    async with run_server(settings) as srv, srv.client() as c:
        tenant = await new_tenant(srv)
        doc = await new_session(srv, tenant["apiKey"])
        sid = doc["sessionId"]
        pc, offer = await make_offer()  # never applies the answer: never connects
        try:
            r = await c.post(
                "/api/webrtc", params={"token": doc["ingestToken"]}, content=offer, headers=SDP
            )
            assert r.status_code == 201, r.text
            started = time.monotonic()
            r = await c.delete(f"/api/sessions/{sid}", headers={"x-tenant-key": tenant["apiKey"]})
            assert r.status_code == 200, r.text

            async def hung_up() -> bool:
                return not srv.whip.peers and await claim_released(srv, sid)

            await wait_for(hung_up, 10, "the hang-up")
            assert time.monotonic() - started < 5
            session = await srv.stored_session(sid)
            assert session.status == "ended" and session.end_reason == "deleted"
            assert not srv.whip.tasks
        finally:
            await close(pc)


# -- a real browser ---------------------------------------------------------------------------

# The seed's browser example (§5b), with no ICE server: the page hands its offer to the
# server, applies the answer, and shows what /ws/subscribe sends back.
PRODUCER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>WHIP producer</title></head>
<body><h1>Microphone to captions</h1><div id="captions"></div>
<script>
const SERVER = %(server)s, INGEST_TOKEN = %(token)s;
const whip = (window.__whip = {events: [], log: []});
async function main() {
  const pc = new RTCPeerConnection({ iceServers: [] });
  window.__pc = pc;
  pc.onconnectionstatechange = () => whip.log.push("pc " + pc.connectionState);
  const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
  mic.getTracks().forEach(t => pc.addTrack(t, mic));
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => {
    if (pc.iceGatheringState === "complete") r();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r();
  });
  const res = await fetch(SERVER + "/api/webrtc?token=" + INGEST_TOKEN, {
    method: "POST", headers: { "content-type": "application/sdp" }, body: pc.localDescription.sdp });
  whip.status = res.status;
  if (res.status !== 201) { whip.error = await res.text(); return; }
  whip.resource = new URL(res.headers.get("location"), SERVER).href;
  whip.sessionId = res.headers.get("x-session-id");
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  const sub = new WebSocket(SERVER.replace(/^http/, "ws") + "/ws/subscribe?token="
                            + res.headers.get("x-subscribe-token"));
  sub.onmessage = e => {
    const m = JSON.parse(e.data);
    whip.events.push(m);
    if (m.type === "transcript" && m.isFinal) {
      const p = document.createElement("p");
      p.className = "line";
      p.textContent = m.text;
      document.getElementById("captions").appendChild(p);
    }
  };
}
main().catch(e => { whip.error = String(e); });
</script></body></html>"""


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    extra = [
        # A microphone that plays the fixture (looped), granted without a prompt.
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={FIXTURES / 'hello_en.wav'}",
        # Gather on 127.0.0.1 too, where the server listens.
        "--allow-loopback-in-peer-connection",
    ]
    async with launch(extra) as b:
        yield b


@pytest.fixture
def page_site() -> Iterator[list[OtherOrigin]]:
    sites: list[OtherOrigin] = []
    yield sites
    for site in sites:
        site.close()


@pytest.mark.browser
@pytest.mark.slow
async def test_chromium_microphone_to_captions(
    sqlite_url: str, browser: Any, page_site: list[OtherOrigin]
) -> None:
    from playwright.async_api import expect

    async with run_server(whip_settings(sqlite_url, recognizer="sphinx")) as srv:
        tenant = await new_tenant(srv)
        doc = await new_session(srv, tenant["apiKey"], title="Browser WHIP")
        page_html = PRODUCER_PAGE % {
            "server": json.dumps(srv.url),
            "token": json.dumps(doc["ingestToken"]),
        }
        site = OtherOrigin({"/": page_html})
        page_site.append(site)
        # The page's origin is the only one the tenant allows.
        async with srv.client() as c:
            r = await c.patch(
                f"/api/admin/tenants/{tenant['tenantId']}",
                json={"allowedOrigins": [site.origin]},
                headers={"authorization": "Bearer test-admin-token"},
            )
            assert r.status_code == 200, r.text

        context = await browser.new_context()
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(site.origin + "/")
        await page.wait_for_function("window.__whip.status || window.__whip.error", timeout=15_000)
        whip = await page.evaluate("window.__whip")
        assert whip.get("status") == 201, whip
        assert whip["sessionId"] == doc["sessionId"]
        await page.wait_for_function("window.__pc.connectionState === 'connected'", timeout=15_000)

        # Captions arrive in the page: pocketsphinx gets "weekly" out of hello_en.
        await page.wait_for_function(
            """() => window.__whip.events.some(
                 m => m.type === "transcript" && m.isFinal && /\\bweekly\\b/i.test(m.text))""",
            timeout=40_000,
        )
        await expect(page.locator("#captions .line").first).to_be_visible()
        print("captions in the page:", await page.locator("#captions .line").all_inner_texts())

        # Hang up from the page (a cross-origin DELETE on the Location): the session ends.
        status = await page.evaluate(
            "fetch(window.__whip.resource, {method: 'DELETE'}).then(r => r.status)"
        )
        assert status == 204
        await page.wait_for_function(
            "window.__whip.events.some(m => m.type === 'session-end')", timeout=15_000
        )
        session = await srv.stored_session(doc["sessionId"])
        assert session.status == "ended" and session.end_reason == "whip-ended"
        assert session.audio_ms > 3000 and session.producer_id is None
        assert not srv.whip.peers
        assert not errors, errors
        await context.close()


# -- other endings ------------------------------------------------------------------------------


async def test_idle_session_ended_elsewhere_and_shutdown(sqlite_url: str) -> None:
    """Silence → the claim is released, session live. The session ended through REST →
    the peer is hung up. Server shutdown → peers hung up, claims released."""
    settings = whip_settings(sqlite_url, ingest_idle_timeout_s=1.5)
    pcm = read_wav("hello_en.wav")[: 32000 // 2]  # 0.5 s, then the track goes quiet
    async with run_server(settings) as srv, srv.client() as c:
        tenant = await new_tenant(srv)
        key = {"x-tenant-key": tenant["apiKey"]}
        quiet = await publish(
            c, pcm, token=(await new_session(srv, tenant["apiKey"]))["ingestToken"]
        )
        ended = await publish(c, pcm * 60, tenant_key=tenant["apiKey"], loop=True)
        try:
            await wait_connected(quiet.pc)
            await wait_connected(ended.pc)
            await wait_for(lambda: claim_released(srv, quiet.session_id), 10, "idle release")
            session = await srv.stored_session(quiet.session_id)
            assert session.status == "live" and 400 <= session.audio_ms <= 600

            r = await c.delete(f"/api/sessions/{ended.session_id}", headers=key)
            assert r.status_code == 200, r.text
            await wait_for(lambda: claim_released(srv, ended.session_id), 10, "the hang-up")
            session = await srv.stored_session(ended.session_id)
            assert session.status == "ended" and session.end_reason == "deleted"
            assert not srv.whip.peers

            # A producer still streaming when the server stops.
            last = await publish(c, pcm, tenant_key=tenant["apiKey"], loop=True)
            await wait_connected(last.pc)
            await asyncio.sleep(1)
        finally:
            for p in (quiet, ended):
                await close(p.pc)
    assert not srv.whip.peers and not srv.whip.tasks
    await close(last.pc)
    async with run_server(settings) as again:
        session = await again.stored_session(last.session_id)
        assert session.status == "live" and session.producer_id is None
        assert session.audio_ms >= 900
