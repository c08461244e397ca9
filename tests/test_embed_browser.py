"""The embeddable caption page (§7-§8) in a real browser: Debian chromium via Playwright.

A host page on another origin frames ``/embed/{id}#t=EMBED_TOKEN`` (100% x 320 px), a
producer streams ``hello_en.wav`` at real-time pace into ``/ws/stt``, recognized by
pocketsphinx, and the iframe must show the line being written, then the final line,
the tenant's branding, and "The session has ended" after ``stop``. The page's error
messages (no token, bad / expired token, unknown session, network down) and options
are checked on a second server with the null recognizer.

chromium comes from Debian (``scripts/install --test``); without it the tests skip,
or fail when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import websockets
from browser import OtherOrigin, contrast, launch, rgb_of
from conftest import (
    Running,
    make_settings,
    new_session,
    new_tenant,
    read_wav,
    run_server,
)

from mcustt import wire
from mcustt.tokens import TokenIssuer
from mcustt.wire import ErrorCode

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
JWT_SECRET = "embed-browser-test-secret-0123456789abcdef"
BRAND = {
    "brandName": "Acme Live",
    "accentColor": "#0b5",
    "logoUrl": "https://logo.invalid/acme.png",
}
FRAME_MS = 20
FRAME_BYTES = 16000 * 2 * FRAME_MS // 1000


# -- helpers ------------------------------------------------------------------------------


@dataclass
class RequestLog:
    """Every HTTP/WebSocket request the mcustt server received: path, query, headers."""

    app: Any
    seen: list[tuple[str, str, list[tuple[str, str]]]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            self.seen.append((scope["path"], scope["query_string"].decode("latin-1"), headers))
        await self.app(scope, receive, send)


def record_requests(srv: Running) -> RequestLog:
    """Wrap the server's ASGI app; connections opened from now on go through it."""
    config = srv.server.config
    log = RequestLog(config.loaded_app)
    config.loaded_app = log
    return log


def host_page(embed_url: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Host page</title></head>
<body style="margin:0;padding:16px 24px;font-family:sans-serif;background:#e9ecf1">
<h1 style="font-size:18px;margin:0 0 10px">Weekly planning call (host page)</h1>
<iframe id="captions" title="Live captions" src="{embed_url}"
        style="width:100%;height:320px;border:0;border-radius:12px"></iframe>
</body></html>"""


@pytest.fixture
def host() -> Iterator[OtherOrigin]:
    with OtherOrigin() as site:
        yield site


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launch() as b:
        yield b


async def stream_audio(ws: Any, pcm: bytes) -> None:
    """PCM16 in 20 ms frames at real-time pace."""
    start = time.monotonic()
    for n, i in enumerate(range(0, len(pcm), FRAME_BYTES)):
        await ws.send(pcm[i : i + FRAME_BYTES])
        delay = start + (n + 1) * FRAME_MS / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


# Runs inside the iframe: timestamps every change of the interim line and every final.
OBSERVE = """() => {
  const log = (window.__embedTest = []);
  const t0 = performance.now();
  const interim = document.getElementById("interim");
  const note = (kind, text, seq) =>
    log.push({kind, text, seq, t: Math.round(performance.now() - t0)});
  new MutationObserver(() => {
    if (!interim.hidden && interim.textContent.trim()) note("interim", interim.textContent);
  }).observe(interim, {childList: true, characterData: true, subtree: true, attributes: true});
  new MutationObserver((records) => {
    for (const r of records)
      for (const n of r.addedNodes) note("final", n.textContent, n.dataset.seq);
  }).observe(document.getElementById("finals"), {childList: true});
}"""


# -- the live path ------------------------------------------------------------------------


async def test_live_captions_in_cross_origin_iframe(
    sqlite_url: str, browser: Any, host: OtherOrigin
) -> None:
    from playwright.async_api import expect

    settings = make_settings(sqlite_url, recognizer="sphinx", jwt_secret=JWT_SECRET)
    async with run_server(settings) as srv:
        requests = record_requests(srv)
        tenant = await new_tenant(srv, brand=BRAND, allowedOrigins=[host.origin])
        doc = await new_session(srv, tenant["apiKey"], title="Weekly planning")
        sid, embed_token = doc["sessionId"], doc["embedToken"]
        assert doc["embedUrl"].endswith(f"/embed/{sid}#t={embed_token}")
        host.pages["/call"] = host_page(doc["embedUrl"])

        context = await browser.new_context(viewport={"width": 900, "height": 420})
        page = await context.new_page()
        browser_urls: list[str] = []
        page.on("request", lambda r: browser_urls.append(r.url))
        console: list[str] = []
        # Script errors only: the logo host does not resolve here, and that is expected.
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))

        def on_console(m: ConsoleMessage) -> None:
            if m.type == "error" and not m.text.startswith("Failed to load resource"):
                console.append(f"{m.type}: {m.text}")

        page.on("console", on_console)
        await page.goto(host.origin + "/call")
        frame_el = await page.wait_for_selector("iframe#captions")
        frame = await frame_el.content_frame()
        assert frame is not None
        cap = page.frame_locator("iframe#captions")

        # Connected, branded, and waiting.
        await expect(cap.locator("#state-text")).to_have_text("Live", timeout=10_000)
        await expect(cap.locator("#brand")).to_have_text("Acme Live")
        await expect(cap.locator("#title")).to_have_text("Weekly planning")
        await expect(cap.locator("#placeholder")).to_be_visible()
        accent = await frame.evaluate("document.documentElement.dataset.accent")
        assert accent == "#00bb55"  # #0b5 reads fine on the dark theme: used as is
        brand_color = await cap.locator("#brand").evaluate("e => getComputedStyle(e).color")
        assert rgb_of(brand_color) == (0, 187, 85)
        border = await cap.locator("#bar").evaluate("e => getComputedStyle(e).borderBottomColor")
        assert rgb_of(border) == (0, 187, 85)
        bg = await frame.evaluate("getComputedStyle(document.body).backgroundColor")
        assert contrast(rgb_of(brand_color), rgb_of(bg)) >= 4.5
        # The logo URL does not load here: the page hides the <img> instead of a broken icon.
        await expect(cap.locator("#logo")).to_have_attribute("src", BRAND["logoUrl"])
        await expect(cap.locator("#logo")).to_be_hidden()
        # Accessibility: finals are the polite live region, the interim line is not.
        await expect(cap.locator("#finals")).to_have_attribute("aria-live", "polite")
        await expect(cap.locator("#interim")).to_have_attribute("aria-hidden", "true")
        await frame.evaluate(OBSERVE)

        # Produce: hello_en.wav at real time, then silence so the VAD closes the utterance.
        pcm = read_wav("hello_en.wav")
        async with websockets.connect(f"{srv.ws_url}/ws/stt?token={doc['ingestToken']}") as ws:
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready"
            await stream_audio(ws, pcm)

            async def silence_until_final() -> None:
                while True:
                    await stream_audio(ws, bytes(FRAME_BYTES * 10))

            feeder = asyncio.create_task(silence_until_final())
            try:
                await expect(cap.locator("#finals .line").first).to_have_text(
                    re.compile(r"\w"), timeout=15_000
                )
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder

            observed: list[dict[str, Any]] = await frame.evaluate("window.__embedTest")
            kinds = [e["kind"] for e in observed]
            print("observed in the iframe:", json.dumps(observed))
            assert "interim" in kinds, observed
            first_final = kinds.index("final")
            assert kinds.index("interim") < first_final, "an interim must precede the final"
            assert observed[first_final]["text"].strip()
            await expect(cap.locator("#interim")).to_be_hidden()  # replaced by its final
            await expect(cap.locator("#scroller")).to_have_attribute("lang", "en-US")
            await expect(cap.locator("#finals .line").first).to_have_attribute("lang", "en-US")

            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "embed.png"))

            await ws.send(json.dumps({"type": "stop"}))
            with contextlib.suppress(websockets.ConnectionClosed):
                async for _ in ws:
                    pass

        await expect(cap.locator("#notice-title")).to_have_text(
            "The session has ended", timeout=10_000
        )
        await expect(cap.locator("#state-text")).to_have_text("Ended")
        await expect(cap.locator("#finals .line").first).to_be_visible()  # captions stay
        await page.screenshot(path=str(ARTIFACTS / "embed-ended.png"))

        # Each final once, in seq order.
        seqs = await cap.locator("#finals .line").evaluate_all(
            "els => els.map(e => +e.dataset.seq)"
        )
        assert seqs == sorted(set(seqs)) and seqs, seqs
        await context.close()

    # The token is in the fragment: neither the page request nor its assets carry it,
    # as the browser sent them and as the server received them.
    embed_urls = [u for u in browser_urls if "/embed" in u]
    assert any(f"/embed/{sid}" in u for u in embed_urls), browser_urls
    assert not [u for u in embed_urls if embed_token in u], embed_urls
    page_hits = [r for r in requests.seen if r[0].startswith("/embed")]
    assert any(path == f"/embed/{sid}" for path, _, _ in page_hits)
    for path, qs, headers in page_hits:
        assert embed_token not in path + "?" + qs
        assert not [h for h in headers if embed_token in h[1]], (path, headers)
    # The state request sends it as a bearer header; only the SSE URL has it (?t=).
    in_urls = {path for path, qs, _ in requests.seen if embed_token in qs}
    assert in_urls == {f"/api/sessions/{sid}/stream"}, in_urls
    assert not console, console


# -- messages and options ---------------------------------------------------------------


async def test_error_messages_and_options(sqlite_url: str, browser: Any) -> None:
    from playwright.async_api import expect

    async with run_server(make_settings(sqlite_url, jwt_secret=JWT_SECRET)) as srv:
        tenant = await new_tenant(srv, brand=BRAND)
        doc = await new_session(srv, tenant["apiKey"], title="Options")
        other = await new_session(srv, tenant["apiKey"])
        sid, token = doc["sessionId"], doc["embedToken"]
        base = f"{srv.url}/embed/{sid}"
        expired = TokenIssuer(JWT_SECRET, ingest_ttl_s=60, read_ttl_s=-60)
        fresh = TokenIssuer(JWT_SECRET, ingest_ttl_s=60, read_ttl_s=3600)
        context = await browser.new_context(viewport={"width": 800, "height": 320})
        page = await context.new_page()

        async def shows(url: str, title: str, problem: str) -> None:
            await page.goto("about:blank")  # a fresh document, not a same-page #hash change
            await page.goto(url)
            await expect(page.locator("#notice-title")).to_have_text(title, timeout=10_000)
            await expect(page.locator("#notice")).to_be_visible()
            await expect(page.locator("#notice-text")).not_to_be_empty()
            assert await page.evaluate("document.documentElement.dataset.problem") == problem

        await shows(base, "This caption link is incomplete", "NO_TOKEN")
        await shows(base + "#t=", "This caption link is incomplete", "NO_TOKEN")
        await shows(base + "#t=not-a-token", "This caption link is not valid", "INVALID_TOKEN")
        # A genuine token of another session: also not valid here.
        await shows(
            base + "#t=" + other["embedToken"], "This caption link is not valid", "INVALID_TOKEN"
        )
        stale, _ = expired.mint(sid, tenant["tenantId"], "embed")
        await shows(base + "#t=" + stale, "This caption link has expired", "TOKEN_EXPIRED")
        ghost, _ = fresh.mint("NoSuchSess", tenant["tenantId"], "embed")
        await shows(
            f"{srv.url}/embed/NoSuchSess#t={ghost}",
            "Caption session not found",
            "SESSION_NOT_FOUND",
        )
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "embed-error.png"))

        # Network down: a message, and the page keeps retrying.
        await page.route("**/api/sessions/**", lambda route: route.abort("internetdisconnected"))
        await shows(base + "#t=" + token, "Can't reach the caption server", "NETWORK")
        await expect(page.locator("#state-text")).to_have_text("Reconnecting…")
        await page.unroute("**/api/sessions/**")
        await expect(page.locator("#state-text")).to_have_text("Live", timeout=10_000)
        await expect(page.locator("#notice")).to_be_hidden()

        # Light theme: #0b5 fails AA on white, so a darker shade of it is used instead.
        await page.goto(base + "?theme=light&fontSize=200&lines=2#t=" + token)
        await expect(page.locator("#state-text")).to_have_text("Live", timeout=10_000)
        assert await page.evaluate("document.documentElement.dataset.theme") == "light"
        assert await page.evaluate("document.documentElement.dataset.accentSource") == "adjusted"
        color = rgb_of(await page.locator("#brand").evaluate("e => getComputedStyle(e).color"))
        bg = rgb_of(await page.evaluate("getComputedStyle(document.body).backgroundColor"))
        assert bg == (255, 255, 255)
        assert contrast(color, bg) >= 4.5 and color != (0, 187, 85)
        font = await page.locator("#scroller").evaluate("e => getComputedStyle(e).fontSize")
        assert font == "64px"  # clamped

        await page.goto(base + "?title=0&fontSize=8#t=" + token)
        await expect(page.locator("#bar")).to_be_hidden()
        await expect(page.locator("#placeholder")).to_be_visible(timeout=10_000)
        font = await page.locator("#scroller").evaluate("e => getComputedStyle(e).fontSize")
        assert font == "12px"
        await context.close()


# -- replay, order, duplicates, resume ------------------------------------------------------


async def test_backfill_dedupe_and_resume(sqlite_url: str, browser: Any) -> None:
    """Driven from the server side: finals in the store, events straight into the hub."""
    from playwright.async_api import expect

    from mcustt import events

    async with run_server(make_settings(sqlite_url, jwt_secret=JWT_SECRET)) as srv:
        requests = record_requests(srv)
        tenant = await new_tenant(srv, brand=BRAND)
        doc = await new_session(srv, tenant["apiKey"], title="Replay")
        sid, token = doc["sessionId"], doc["embedToken"]
        repo, hub = srv.state.repo, srv.state.hub
        now = int(time.time() * 1000)

        async def store(seq: int, text: str) -> wire.TranscriptEvent:
            await repo.append_final(
                sid, seq=seq, text=text, lang="en-US", ts=now, start_ms=0, end_ms=0, audio_ms=0
            )
            return events.transcript(seq=seq, text=text, is_final=True, lang="en-US", ts=now)

        def interim(seq: int, text: str) -> wire.TranscriptEvent:
            return events.transcript(seq=seq, text=text, is_final=False, lang="en-US", ts=now)

        for seq, text in enumerate(["Line one", "Line two", "Line three"], start=1):
            await store(seq, text)

        context = await browser.new_context(viewport={"width": 800, "height": 320})
        page = await context.new_page()
        await page.goto(f"{srv.url}/embed/{sid}?lines=2#t={token}")
        lines = page.locator("#finals .line")
        # Joined late: the last `lines` finals are back-filled.
        await expect(page.locator("#state-text")).to_have_text("Live", timeout=10_000)
        await expect(lines).to_have_text(["Line two", "Line three"])

        # The line being written: replaced in place; a stale interim is ignored.
        await hub.publish(sid, interim(4, "Line fo"))
        await expect(page.locator("#interim")).to_have_text("Line fo")
        await hub.publish(sid, interim(4, "Line four is"))
        await hub.publish(sid, interim(3, "stale"))
        await expect(page.locator("#interim")).to_have_text("Line four is")
        # A duplicate final changes nothing; the next one replaces the interim.
        await hub.publish(sid, events.line_event((await repo.lines(sid))[2]))
        await hub.publish(sid, await store(4, "Line four is here"))
        await expect(lines).to_have_text(["Line three", "Line four is here"])  # lines=2
        await expect(page.locator("#interim")).to_be_hidden()

        await hub.publish(sid, events.language("es-ES"))
        await expect(page.locator("#scroller")).to_have_attribute("lang", "es-ES")
        await expect(page.locator("#lang-badge")).to_have_text("ES-ES")

        # The server drops a slow viewer: the page reopens the feed after its last final,
        # so a line persisted meanwhile shows up, and nothing twice.
        await hub.publish(sid, events.error(ErrorCode.SLOW_CONSUMER, "too slow", fatal=True))
        await store(5, "Line five")
        await expect(lines).to_have_text(["Line four is here", "Line five"], timeout=10_000)
        await expect(page.locator("#state-text")).to_have_text("Live")
        streams = [qs for path, qs, _ in requests.seen if path.endswith("/stream")]
        assert len(streams) == 2, streams
        assert "lastEventId=1" in streams[0] and "lastEventId=4" in streams[1], streams

        await hub.publish(sid, events.session_end("stopped"))
        await expect(page.locator("#notice-title")).to_have_text("The session has ended")
        await expect(page.locator("#state-text")).to_have_text("Ended")
        await expect(lines).to_have_count(2)
        await context.close()
