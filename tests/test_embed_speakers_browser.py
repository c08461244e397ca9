"""The embed page with named speakers (issue 14), in headless Chromium.

Two participants talk over each other: the page must show two separate live lines, each
under its speaker's name in its own colour (AA contrast on the theme), then each final
once, and rename a speaker's lines live when the owner renames them. Events are pushed
through the hub and finals written through the store, as the tracks' pipelines do (the
audio path is the tracks tests' subject); the rename goes through the REST API.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from browser import contrast, launch, rgb_of
from conftest import Running, make_settings, new_session, new_tenant, run_server
from rest_helpers import client

from mcustt import events, wire

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
NOW = int(time.time() * 1000)
PRIYA: wire.Speaker = {"id": "p1", "name": "Priya"}
SAM: wire.Speaker = {"id": "endpoint-7f3a", "name": "Sam"}


def interim(seq: int, text: str, speaker: wire.Speaker | None) -> wire.TranscriptEvent:
    return events.transcript(
        seq=seq, text=text, is_final=False, lang="en-US", ts=NOW, speaker=speaker
    )


async def final(srv: Running, sid: str, text: str, speaker: wire.Speaker | None) -> None:
    """Persist a final as a track's pipeline does (the store allocates its seq) and
    publish it."""
    line = await srv.state.repo.append_final(
        sid,
        text=text,
        lang="en-US",
        ts=NOW,
        start_ms=0,
        end_ms=0,
        audio_ms=0,
        speaker=speaker["id"] if speaker else None,
    )
    names = await srv.state.repo.speaker_names(sid)
    await srv.state.hub.publish(sid, events.line_event(line, names))


# Runs in the page: every live line and final as (speaker id, name, text, colour).
LINES = """(sel) => [...document.querySelectorAll(sel)].filter(p => !p.hidden).map(p => {
  const label = p.querySelector(".speaker");
  const text = p.querySelector(".text");
  return {
    speaker: p.dataset.speaker || "",
    name: label ? label.textContent : null,
    text: (text || p).textContent,
    color: label ? getComputedStyle(label).color : null,
  };
})"""

PALETTE = """() => {
  const out = [];
  for (let i = 0; i < 8; i += 1) {
    const span = document.createElement("span");
    span.className = "speaker spk-" + i;
    document.body.appendChild(span);
    out.push(getComputedStyle(span).color);
    span.remove();
  }
  return out;
}"""


async def lines(page: Any, sel: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = await page.evaluate(LINES, sel)
    return got


async def test_two_live_speakers_names_colours_and_rename(sqlite_url: str) -> None:
    from playwright.async_api import expect

    async with run_server(make_settings(sqlite_url)) as srv, launch() as browser:
        tenant = await new_tenant(srv)
        doc = await new_session(srv, tenant["apiKey"], title="Planning")
        sid, token = doc["sessionId"], doc["embedToken"]
        hub = srv.state.hub
        # The tracks record their participants' names when they connect.
        await srv.state.repo.upsert_speaker(sid, PRIYA["id"], PRIYA["name"])
        await srv.state.repo.upsert_speaker(sid, SAM["id"], SAM["name"])

        context = await browser.new_context(viewport={"width": 900, "height": 420})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{srv.url}/embed/{sid}#t={token}")
        await expect(page.locator("#state-text")).to_have_text("Live", timeout=10_000)

        # Both talk at once: two live lines, neither overwriting the other, although
        # both interims carry the seq the session gives next.
        await hub.publish(sid, interim(1, "So the plan for", PRIYA))
        await hub.publish(sid, interim(1, "Wait I think", SAM))
        await hub.publish(sid, interim(1, "So the plan for Friday is", PRIYA))
        live = page.locator(".line.interim:not([hidden])")
        await expect(live).to_have_count(2)
        await expect(live.nth(0).locator(".text")).to_have_text("So the plan for Friday is")
        got = await lines(page, ".line.interim")
        assert [(x["speaker"], x["name"], x["text"]) for x in got] == [
            ("p1", "Priya", "So the plan for Friday is"),
            ("endpoint-7f3a", "Sam", "Wait I think"),
        ]
        assert got[0]["color"] != got[1]["color"], got  # a colour per speaker
        bg = rgb_of(await page.evaluate("getComputedStyle(document.body).backgroundColor"))
        for x in got:
            assert contrast(rgb_of(x["color"]), bg) >= 4.5, x
        # The mixed producer's line (#interim) is not used for participants.
        await expect(page.locator("#interim")).to_be_hidden()
        await expect(page.locator("#placeholder")).to_be_hidden()

        # Sam finishes first (seq 1); Priya's line stays live and goes on (seq 2).
        await final(srv, sid, "Wait, I think we need one more day.", SAM)
        await hub.publish(sid, interim(2, "So the plan for Friday is to ship", PRIYA))
        finals = page.locator("#finals .line")
        await expect(finals).to_have_count(1)
        await expect(live).to_have_count(1)
        await expect(live.nth(0).locator(".text")).to_have_text("So the plan for Friday is to ship")
        # Sam talks again while Priya still does: two live lines, and a final between.
        await hub.publish(sid, interim(2, "And the docs", SAM))
        await expect(live).to_have_count(2)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "embed-speakers.png"))

        await final(srv, sid, "So the plan for Friday is to ship the billing page.", PRIYA)
        await final(srv, sid, "And the docs too.", SAM)
        await expect(finals).to_have_count(3)
        await expect(live).to_have_count(0)
        got = await lines(page, "#finals .line")
        assert [(x["name"], x["text"]) for x in got] == [
            ("Sam", "Wait, I think we need one more day."),
            ("Priya", "So the plan for Friday is to ship the billing page."),
            ("Sam", "And the docs too."),
        ]
        # Each speaker keeps one colour: live and final, line after line.
        colours = {x["name"]: x["color"] for x in got}
        assert got[0]["color"] == got[2]["color"] and len(set(colours.values())) == 2
        # Screen readers hear "Sam: …" (the label ends with a colon).
        after = await page.locator("#finals .speaker").first.evaluate(
            "e => getComputedStyle(e, '::after').content"
        )
        assert after == '":"'

        # The owner renames Sam: the lines already shown follow at once.
        async with client(srv) as c:
            r = await c.put(
                f"/api/sessions/{sid}/speakers/{SAM['id']}",
                json={"name": "Sam Lee"},
                headers={"x-tenant-key": tenant["apiKey"]},
            )
            assert r.status_code == 200
        await expect(page.locator("#finals .speaker").nth(0)).to_have_text("Sam Lee")
        await expect(page.locator("#finals .speaker").nth(2)).to_have_text("Sam Lee")
        await expect(page.locator("#finals .speaker").nth(1)).to_have_text("Priya")
        # A later event still carrying the old name does not undo the rename.
        await hub.publish(sid, interim(4, "One more", SAM))
        await expect(live.locator(".speaker")).to_have_text("Sam Lee")
        # A line of the mixed producer looks as it always did: no name, no spans.
        await final(srv, sid, "From the room microphone.", None)
        await expect(finals).to_have_count(4)
        mixed = finals.nth(3)
        assert await mixed.evaluate("e => e.children.length") == 0
        await expect(mixed).to_have_text("From the room microphone.")
        await page.screenshot(path=str(ARTIFACTS / "embed-speakers-renamed.png"))

        # A viewer opening the page now (light theme) gets the lines under the current
        # names, in readable colours.
        light = await context.new_page()
        await light.goto(f"{srv.url}/embed/{sid}?theme=light#t={token}")
        await expect(light.locator("#finals .line")).to_have_count(4, timeout=10_000)
        got = await lines(light, "#finals .line")
        assert [x["name"] for x in got] == ["Sam Lee", "Priya", "Sam Lee", None]
        white = rgb_of(await light.evaluate("getComputedStyle(document.body).backgroundColor"))
        assert white == (255, 255, 255)
        for x in got[:3]:
            assert contrast(rgb_of(x["color"]), white) >= 4.5, x

        # The whole palette, on both themes, against both surfaces captions sit on.
        for p, surfaces in ((page, ("#0f1115", "#1a1d24")), (light, ("#ffffff", "#f3f5f8"))):
            palette = [rgb_of(c) for c in await p.evaluate(PALETTE)]
            assert len(set(palette)) == 8
            for colour in palette:
                for hexa in surfaces:
                    surface = rgb_of(
                        f"rgb({int(hexa[1:3], 16)} {int(hexa[3:5], 16)} {int(hexa[5:7], 16)})"
                    )
                    assert contrast(colour, surface) >= 4.5, (colour, hexa)
        assert not errors, errors
        await context.close()
