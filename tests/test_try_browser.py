"""The try-it page (``GET /try``, issue 16) in a real browser: Debian chromium via Playwright.

A user pastes a tenant key, creates a session and streams a microphone over WHIP:
Chromium's fake capture device plays ``hello_en.wav`` (looped), pocketsphinx hears
"weekly", the page shows the line being written and then the final line. Stop hangs
up and ends the session; the transcript downloads (json, srt, vtt, txt) carry the
words; the summary appears. A second flow uploads a 48 kHz stereo WAV through the file
input: the page decodes and resamples it to 16 kHz mono PCM16 and sends it over
``/ws/stt``. Asking a question and fixing a line are exercised when the server has
those routes. A last test checks the page's CSP (no inline script, nothing from other
origins) without a browser.

chromium comes from Debian (``scripts/install --test``); without it the browser tests
skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import json
import re
import struct
import time
import wave
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser import launch
from conftest import FIXTURES, Running, make_settings, new_tenant, read_wav, run_server

from mcustt.config import Settings
from mcustt.resources import WEB_DIR

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Locator, Page

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
LOOPBACK = ["127.0.0.1"]
#: Generous: two cores shared with other test runs; every wait is on a condition.
LONG_MS = 90_000
SHORT_MS = 20_000

#: Records what the captions area showed: the line being written and each final.
OBSERVE = """() => {
  const log = (window.__tryTest = []);
  const interim = document.getElementById("interim");
  new MutationObserver(() => {
    if (!interim.hidden && interim.textContent.trim())
      log.push({kind: "interim", text: interim.textContent});
  }).observe(interim, {childList: true, characterData: true, subtree: true, attributes: true});
  new MutationObserver((records) => {
    for (const r of records)
      for (const n of r.addedNodes) log.push({kind: "final", text: n.textContent});
  }).observe(document.getElementById("finals"), {childList: true});
}"""


def try_settings(sqlite_url: str, **overrides: Any) -> Settings:
    # WHIP needs a candidate on 127.0.0.1, where the browser and the server meet.
    return make_settings(
        sqlite_url, recognizer="sphinx", webrtc_host_addresses=LOOPBACK, **overrides
    )


def has_route(srv: Running, method: str, path: str) -> bool:
    """Whether this build serves ``method path`` (ask and corrections land separately)."""
    from starlette.routing import Route

    return any(
        isinstance(r, Route) and r.path == path and method in (r.methods or set())
        for r in srv.app.routes
    )


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


class Problems:
    """Script errors and CSP refusals on a page (a missing favicon is fine)."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        page.on("pageerror", lambda e: self.seen.append(f"pageerror: {e}"))
        page.on("console", self._console)

    def _console(self, m: ConsoleMessage) -> None:
        if m.type == "error" and not m.text.startswith("Failed to load resource"):
            self.seen.append(f"{m.type}: {m.text}")


def said(page: Page, word: str) -> Locator:
    """The first final line that has ``word`` (the recognizer may cut lines anywhere)."""
    return page.locator("#finals .line .text", has_text=re.compile(rf"\b{word}\b", re.I)).first


async def open_with_key(page: Page, srv: Running, key: str) -> None:
    from playwright.async_api import expect

    await page.goto(srv.url + "/try")
    await page.fill("#key", key)
    await page.click("#key-use")
    await expect(page.locator("#key-held")).to_be_visible(timeout=SHORT_MS)
    await expect(page.locator("#key")).to_have_value("")
    # The key lives in the page's memory only.
    stored = await page.evaluate(
        "[localStorage.length, sessionStorage.length, document.cookie, location.href]"
    )
    assert stored[:3] == [0, 0, ""], stored
    assert key not in stored[3]
    assert not await page.context.cookies()
    assert key not in await page.content()


async def create_session(page: Page, title: str) -> str:
    from playwright.async_api import expect

    before = await page.locator("#sid").inner_text()
    await page.fill("#title", title)
    await page.click("#create")
    await expect(page.locator("#sid")).not_to_have_text(
        re.compile("^" + re.escape(before) + "$"), timeout=SHORT_MS
    )
    sid = await page.locator("#sid").inner_text()
    assert sid
    href = await page.locator("#embed-link").get_attribute("href")
    assert href is not None and f"/embed/{sid}#t=" in href, href
    await expect(page.locator("#sstatus")).to_have_text("live")
    await expect(page.locator("#feed-status")).to_contain_text("Connected", timeout=SHORT_MS)
    return sid


async def download(page: Page, fmt: str) -> str:
    async with page.expect_download(timeout=SHORT_MS) as info:
        await page.click(f"button.dl[data-format={fmt}]")
    dl = await info.value
    assert dl.suggested_filename.endswith("." + fmt), dl.suggested_filename
    path = await dl.path()
    return Path(path).read_text(encoding="utf-8")


async def expect_summary(page: Page) -> None:
    from playwright.async_api import expect

    await page.click("#summary-get")
    await expect(page.locator("#summary-tldr")).not_to_be_empty(timeout=LONG_MS)
    await expect(page.locator("#summary")).to_be_visible()
    await expect(page.locator("#summary-status")).to_contain_text("Summary ready")


# -- the microphone over WHIP ---------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
async def test_microphone_captions_downloads_summary(sqlite_url: str, browser: Any) -> None:
    from playwright.async_api import expect

    async with run_server(try_settings(sqlite_url)) as srv:
        tenant = await new_tenant(srv)
        key = tenant["apiKey"]
        context = await browser.new_context(viewport={"width": 1000, "height": 1400})
        page = await context.new_page()
        problems = Problems(page)
        await open_with_key(page, srv, key)
        sid = await create_session(page, "Weekly planning")
        await page.evaluate(OBSERVE)

        await page.click("#mic-start")
        await expect(page.locator("#audio-status")).to_contain_text(
            "Microphone live", timeout=SHORT_MS
        )
        await expect(page.locator("#mic-stop")).to_be_enabled()
        # pocketsphinx gets "weekly" out of hello_en.
        await expect(said(page, "weekly")).to_be_visible(timeout=LONG_MS)
        observed: list[dict[str, str]] = await page.evaluate("window.__tryTest")
        kinds = [e["kind"] for e in observed]
        assert "interim" in kinds and kinds.index("interim") < kinds.index("final"), observed
        await live_correction(srv, page, sid, key)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "try-live.png"), full_page=True)

        # Stop: the page hangs up, the session ends, its lines stay.
        await page.click("#mic-stop")
        await expect(page.locator("#sstatus")).to_have_text("ended", timeout=LONG_MS)
        await expect(page.locator("#feed-status")).to_contain_text("ended", timeout=SHORT_MS)
        await expect(page.locator("#mic-start")).to_be_disabled()
        session = await srv.stored_session(sid)
        assert session.status == "ended" and session.end_reason == "whip-ended"
        shown = await page.locator("#finals .line .text").all_inner_texts()
        assert shown

        # Downloads: the words the page showed are in every format.
        doc = json.loads(await download(page, "json"))
        assert doc["sessionId"] == sid
        assert [t for line in doc["lines"] if (t := line["text"].strip())] == shown
        txt = await download(page, "txt")
        assert re.search(r"\bweekly\b", txt, re.I), txt
        srt = await download(page, "srt")
        assert "-->" in srt and " ".join(shown[0].split()) in _cue_words(srt), srt
        vtt = await download(page, "vtt")
        assert vtt.startswith("WEBVTT") and " ".join(shown[0].split()) in _cue_words(vtt), vtt

        await expect_summary(page)
        await fix_and_ask(srv, page, sid, key)
        await page.screenshot(path=str(ARTIFACTS / "try-after.png"), full_page=True)
        assert not problems.seen, problems.seen
        await context.close()


LINES_ROUTE = "/api/sessions/{session_id}/lines/{seq}"


async def live_correction(srv: Running, page: Page, sid: str, key: str) -> None:
    """A correction made elsewhere while the session is live replaces the page's line."""
    from playwright.async_api import expect

    if not has_route(srv, "PATCH", LINES_ROUTE):
        print("PATCH /api/sessions/:id/lines/:seq is not served by this build: not tested")
        return
    seq = await page.locator("#finals .line").first.get_attribute("data-seq")
    fixed = "Hello, the weekly call, corrected live."
    async with srv.client() as c:
        r = await c.patch(
            f"/api/sessions/{sid}/lines/{seq}", json={"text": fixed}, headers={"x-tenant-key": key}
        )
    assert r.status_code == 200, r.text
    line = page.locator(f'#finals .line[data-seq="{seq}"]')
    await expect(line.locator(".text")).to_have_text(fixed, timeout=SHORT_MS)
    await expect(line.locator(".revised")).to_be_visible()
    await expect(line).to_have_count(1)  # replaced in place, not added


async def fix_and_ask(srv: Running, page: Page, sid: str, key: str) -> None:
    """Fix the first line and ask a question, where the server has those endpoints."""
    from playwright.async_api import expect

    first = page.locator("#finals .line").first
    if has_route(srv, "PATCH", LINES_ROUTE):
        seq = await first.get_attribute("data-seq")
        await first.locator("button.fix").click()
        await first.locator("input.edit").fill("Hello everyone, welcome to the weekly call.")
        await first.get_by_role("button", name="Save").click()
        await expect(first.locator(".text")).to_have_text(
            "Hello everyone, welcome to the weekly call.", timeout=SHORT_MS
        )
        await expect(first.locator(".revised")).to_be_visible()
        async with srv.client() as c:
            r = await c.get(
                f"/api/sessions/{sid}/transcript",
                params={"format": "txt"},
                headers={"x-tenant-key": key},
            )
        assert "welcome to the weekly call." in r.text, (seq, r.text)
    else:
        print("PATCH /api/sessions/:id/lines/:seq is not served by this build: fix not tested")
    if has_route(srv, "POST", "/api/sessions/{session_id}/ask"):
        await page.fill("#question", "What call is this?")
        await page.click("#ask")
        await expect(page.locator("#answer")).not_to_be_empty(timeout=LONG_MS)
        await expect(page.locator("#answer-kind")).not_to_be_empty()
        await expect(page.locator("#citations li").first).to_be_visible()
    else:
        print("POST /api/sessions/:id/ask is not served by this build: ask not tested")


# -- a file through the file input -----------------------------------------------------------


def stereo_48k(pcm16k: bytes, path: Path) -> None:
    """The fixture as a 48 kHz stereo WAV (each sample thrice, on both channels), so
    the page has to resample and mix down."""
    samples = struct.unpack(f"<{len(pcm16k) // 2}h", pcm16k)
    frames = bytearray()
    for s in samples:
        frames += struct.pack("<hh", s, s) * 3
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(bytes(frames))


@pytest.mark.browser
@pytest.mark.slow
async def test_file_upload_and_api_errors(sqlite_url: str, browser: Any, tmp_path: Path) -> None:
    from playwright.async_api import expect

    audio = tmp_path / "meeting-48k-stereo.wav"
    stereo_48k(read_wav("hello_en.wav"), audio)
    async with run_server(try_settings(sqlite_url)) as srv:
        tenant = await new_tenant(srv)
        context = await browser.new_context(viewport={"width": 1000, "height": 1200})
        page = await context.new_page()
        problems = Problems(page)

        # A wrong key: the API's envelope message is shown, and the key is not kept.
        await page.goto(srv.url + "/try")
        await page.fill("#key", "sk_mcustt_not-a-real-key")
        await page.click("#key-use")
        await expect(page.locator("#alert-text")).to_contain_text(
            "invalid tenant key", timeout=SHORT_MS
        )
        await expect(page.locator("#alert-text")).to_contain_text("INVALID_TENANT_KEY")
        await expect(page.locator("#create")).to_be_disabled()
        await page.screenshot(path=str(ARTIFACTS / "try-error.png"))

        await open_with_key(page, srv, tenant["apiKey"])
        sid = await create_session(page, "Uploaded")
        await expect(page.locator("#alert")).to_be_hidden()
        await page.set_input_files("#file", str(audio))
        await page.select_option("#pace", "4")
        await page.click("#file-send")
        # Through the browser's 48 kHz stereo decode and resampling, pocketsphinx's words
        # for hello_en vary with its settings (since issue 17 it no longer gets "weekly"
        # there): the flow is checked with whatever final it shows.
        first_final = page.locator("#finals .line .text").first
        await expect(first_final).to_be_visible(timeout=LONG_MS)
        # The file's end sends {"type":"stop"}: the session ends.
        await expect(page.locator("#sstatus")).to_have_text("ended", timeout=LONG_MS)
        heard = max(re.findall(r"[A-Za-z']+", await first_final.inner_text()), key=len)
        await expect(page.locator("#audio-status")).to_contain_text("Done", timeout=SHORT_MS)
        session = await srv.stored_session(sid)
        assert session.status == "ended"
        # All of it reached the server, at 16 kHz mono (4.86 s; the last frame padded).
        assert 4800 <= session.audio_ms <= 5000, session.audio_ms
        txt = await download(page, "txt")
        assert re.search(rf"\b{heard}\b", txt, re.I), (heard, txt)
        await expect_summary(page)

        # An old session, opened from the list: captions replayed, no audio to send.
        await page.click("#refresh")
        label = await page.locator(f'#existing option[value="{sid}"]').inner_text()
        year = time.gmtime().tm_year
        assert re.search(rf"\b({year - 1}|{year}|{year + 1})\b", label), label
        await page.select_option("#existing", sid)
        await page.click("#open")
        await expect(said(page, heard)).to_be_visible(timeout=SHORT_MS)
        await expect(page.locator("#sstatus")).to_have_text("ended")
        await expect(page.locator("#file-send")).to_be_disabled()
        await page.screenshot(path=str(ARTIFACTS / "try-file.png"), full_page=True)

        # Stop in the middle of a file sent in real time: the session ends with part of it.
        cut = await create_session(page, "Cut short")
        await page.select_option("#pace", "1")
        await page.click("#file-send")
        await expect(page.locator("#audio-status")).to_contain_text("Sending", timeout=SHORT_MS)
        await page.wait_for_function(
            "() => document.getElementById('file-progress').value > 0.1", timeout=SHORT_MS
        )
        await page.click("#file-stop")
        await expect(page.locator("#sstatus")).to_have_text("ended", timeout=LONG_MS)
        await expect(page.locator("#file-send")).to_be_disabled()
        session = await srv.stored_session(cut)
        assert session.status == "ended" and 0 < session.audio_ms < 4800, session.audio_ms
        assert not problems.seen, problems.seen
        await context.close()


# -- speakers, interims, duplicates and corrections, driven from the server side ---------------


async def test_speakers_duplicates_and_revisions(sqlite_url: str, browser: Any) -> None:
    from playwright.async_api import expect

    from mcustt import events

    async with run_server(make_settings(sqlite_url)) as srv:
        tenant = await new_tenant(srv)
        context = await browser.new_context(viewport={"width": 1000, "height": 900})
        page = await context.new_page()
        problems = Problems(page)
        await open_with_key(page, srv, tenant["apiKey"])
        sid = await create_session(page, "Speakers")
        hub = srv.state.hub

        def event(seq: int, text: str, final: bool, **extra: Any) -> Any:
            e: dict[str, Any] = dict(
                events.transcript(seq=seq, text=text, is_final=final, lang="en-US", ts=0)
            )
            return {**e, **extra}

        # The line being written shows its speaker; its final replaces it.
        await hub.publish(sid, event(1, "Hello th", False, speaker={"name": "Priya"}))
        await expect(page.locator("#interim")).to_have_text("Priya: Hello th")
        await hub.publish(sid, event(1, "Hello there", True, speaker={"name": "Priya"}))
        await hub.publish(sid, event(2, "Hi Priya", True, speaker="Sam"))
        lines = page.locator("#finals .line")
        await expect(lines.locator(".text")).to_have_text(["Hello there", "Hi Priya"])
        await expect(lines.locator(".speaker")).to_have_text(["Priya", "Sam"])
        await expect(page.locator("#interim")).to_be_hidden()
        # A duplicate final changes nothing; a revision replaces the line in place.
        await hub.publish(sid, event(1, "Something else", True))
        await hub.publish(sid, event(3, "Third", True))
        await expect(lines).to_have_count(3)
        await expect(lines.first.locator(".text")).to_have_text("Hello there")
        await hub.publish(sid, event(1, "Hello there, everyone", True, revised=True))
        await expect(lines.first.locator(".text")).to_have_text("Hello there, everyone")
        await expect(lines.first.locator(".speaker")).to_have_text("Priya")  # kept
        await expect(lines.first.locator(".revised")).to_be_visible()
        await expect(lines).to_have_count(3)

        # An API error is shown with the envelope's message: these lines were only
        # published, never stored, so the server does not know line 2.
        if has_route(srv, "PATCH", LINES_ROUTE):
            second = lines.nth(1)
            await second.locator("button.fix").click()
            await second.locator("input.edit").fill("Hi, Priya!")
            await second.get_by_role("button", name="Save").click()
            await expect(page.locator("#alert-text")).to_contain_text(
                "Fixing line 2", timeout=SHORT_MS
            )
            await expect(page.locator("#alert-text")).to_contain_text("HTTP 404")
            await second.get_by_role("button", name="Cancel").click()
            await expect(second.locator(".text")).to_have_text("Hi Priya")

        await hub.publish(sid, events.session_end("stopped"))
        await expect(page.locator("#sstatus")).to_have_text("ended", timeout=SHORT_MS)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "try-speakers.png"), full_page=True)
        assert not problems.seen, problems.seen
        await context.close()


# -- the page's policy -------------------------------------------------------------------------


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts.append(a)
            self._in_script = True
        if tag == "style" or "style" in a:
            self.inline.append(f"<{tag} style>")
        self.handlers += [k for k in a if k.startswith("on")]
        self.urls += [v for k, v in a.items() if k in ("src", "href") and v]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


def directives(csp: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


async def test_try_page_policy(sqlite_url: str) -> None:
    async with run_server(make_settings(sqlite_url)) as srv, srv.client() as c:
        r = await c.get("/try")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        policy = directives(r.headers["content-security-policy"])
        scripts = policy.get("script-src", policy.get("default-src"))
        assert scripts == ["'self'"], policy
        assert "'unsafe-inline'" not in policy.get("style-src", [])
        assert policy["frame-ancestors"] == ["'none'"]
        assert policy["default-src"] == ["'none'"]
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"

        page = _Scripts()
        page.feed(r.text)
        assert not page.inline and not page.handlers, (page.inline, page.handlers)
        assert [s.get("src") for s in page.scripts] == ["/embed-assets/try.js"]
        # Nothing from another origin: every URL of the page is a path on this one.
        assert all(u.startswith("/") or u.startswith("#") for u in page.urls), page.urls
        for asset, kind in (("try.js", "javascript"), ("try.css", "css")):
            a = await c.get("/embed-assets/" + asset)
            assert a.status_code == 200 and kind in a.headers["content-type"], asset
            assert not re.search(r"https?://", a.text), f"{asset} names another origin"
            assert "localStorage" not in a.text.replace("never written to\n * localStorage", "")
        assert (WEB_DIR / "try.html").read_text(encoding="utf-8") == r.text


def _cue_words(text: str) -> str:
    """A subtitle file's words, cue after cue (issue 17 wraps and cuts cues between
    words, so a line of the page may span two lines or cues)."""
    return " ".join(
        line
        for line in text.splitlines()
        if line and "-->" not in line and not line.isdigit() and line != "WEBVTT"
    )
