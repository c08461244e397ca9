"""The profanity filter (issue 17): the word list, the tenant default and the session
option on the API, and filtered text everywhere a viewer or an export can see it.

A plug-in recognizer (``tests/swearing.py``) says "oh shit …" like pocketsphinx would
(lower case, no punctuation, word timings); a plug-in summarizer swears on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from conftest import ADMIN, Running, make_settings, new_session, new_tenant, read_wav, run_server
from rest_helpers import error_of, wait_job
from swearing import FINAL, SHOWN, SwearySummarizer, final_words
from wsclients import Collected, producer, silence, stream_pcm

from mcustt.captions import Filter, Shaper, filter_summary, mask
from mcustt.captions.profanity import word_list
from mcustt.recognizers.base import Hypothesis
from mcustt.summarizers.base import ActionItem, SummaryContent

SWEARING = "swearing:SwearingRecognizer"
SWEARY = "swearing:SwearySummarizer"
PROFANE = ("shit", "fuck", "crap", "damn")


def clean(text: str) -> bool:
    low = text.lower()
    return not any(w in low for w in PROFANE)


# -- the word list and the filter ----------------------------------------------------------------


def test_word_list_ships_in_the_wheel_less_everyday_words() -> None:
    wl = word_list()
    assert {"shit", "fuck", "bitch"} <= wl.words
    assert ("bull", "shit") in wl.phrases
    # ordinary meeting words better-profanity also lists are not filtered
    for word in ("kill", "organ", "strip", "god", "hell", "pot", "len"):
        assert Filter("mask").apply([word]) == [word]


def test_mask_keeps_first_letter_punctuation_and_token_count() -> None:
    f = Filter("mask")
    assert mask("fuck") == "f***" and mask("Shit.") == "S***." and mask("fuckin'") == "f*****'"
    assert f.apply(["what", "the", "fuck", "is", "this", "shit?"]) == [
        "what",
        "the",
        "f***",
        "is",
        "this",
        "s***?",
    ]
    # inflections and two-word entries; not words that merely contain one
    assert f.text("shitty fuckers, bull shit") == "s***** f******, b*** s***"
    assert f.text("assess the class passes; Scunthorpe") == "assess the class passes; Scunthorpe"


def test_remove_drops_words_and_keeps_sentences_whole() -> None:
    f = Filter("remove")
    assert f.apply(["oh", "shit", "we"]) == ["oh", None, "we"]
    # a removed sentence start passes on its capital, a removed end its full stop
    assert f.text("Fuck. That is it.") == "That is it."
    assert f.text("We are done fuck.") == "We are done."
    assert f.text("Shit happens") == "Happens"
    assert f.text("- ship it\n- fucking\n- fix it") == "- ship it\n-\n- fix it"


def test_keywords_and_off_are_left_alone() -> None:
    assert Filter("mask", ["Dick Smith"]).text("ask dick smith") == "ask dick smith"
    assert Filter("off").text("oh shit") == "oh shit"


def test_summary_fields_are_filtered() -> None:
    content = SummaryContent(
        tldr="What a fucking mess.",
        decisions=["Ship the shit.", "bullshit"],
        action_items=[ActionItem(owner=None, task="crap"), ActionItem("Priya", "Fix damn it")],
        qa=["Q: ok? A: yes"],
    )
    masked = filter_summary(content, Filter("mask"))
    assert masked.tldr == "What a f****** mess."
    assert masked.decisions == ["Ship the s***.", "b*******"]
    removed = filter_summary(content, Filter("remove"))
    assert removed.decisions == ["Ship the."]  # an emptied item is dropped
    assert removed.action_items == [ActionItem("Priya", "Fix it")]
    assert removed.qa == content.qa


# -- the shaper: text and words stay one -----------------------------------------------------------


def test_shaper_keeps_text_and_words_together() -> None:
    hyp = Hypothesis(FINAL, True, "en-US", 0, 4500, 0.9, final_words())
    for mode, shown in SHOWN.items():
        out = Shaper(punctuates=False, language="en-US", profanity=mode).shape(hyp)
        assert out.text == shown
        assert out.words is not None
        assert " ".join(w.text for w in out.words) == shown
    removed = Shaper(punctuates=False, language="en-US", profanity="remove").shape(hyp)
    assert removed.words is not None
    assert len(removed.words) == len(final_words()) - 1
    assert all(w.text.lower().strip(".?") != "shit" for w in removed.words)
    # the other words keep their timings
    kept = [w for w in final_words() if w.text != "shit"]
    assert [(w.start_ms, w.end_ms) for w in removed.words] == [(w.start_ms, w.end_ms) for w in kept]


def test_engines_that_punctuate_only_get_the_filter() -> None:
    hyp = Hypothesis("Well, shit. Is it Friday?", True, "en-US")
    shaper = Shaper(punctuates=True, language="en-US", profanity="mask")
    assert shaper.shape(hyp).text == "Well, s***. Is it Friday?"
    off = Shaper(punctuates=True, language="en-US")
    assert not off.active and off.shape(hyp) is hyp


# -- the API ---------------------------------------------------------------------------------------


async def test_tenant_default_session_override_and_bad_values(server: Running) -> None:
    t = await new_tenant(server)
    assert t["profanityFilter"] == "off"
    masked = await new_tenant(server, profanityFilter="mask")
    assert masked["profanityFilter"] == "mask"
    admin = {"authorization": f"Bearer {ADMIN}"}
    async with server.client() as c:
        for body in (
            {"name": "X", "profanityFilter": "bleep"},
            {"name": "X", "profanityFilter": 1},
        ):
            r = await c.post("/api/admin/tenants", json=body, headers=admin)
            assert "profanityFilter" in error_of(r, 400)["message"]
        r = await c.patch(
            f"/api/admin/tenants/{t['tenantId']}", json={"profanityFilter": "remove"}, headers=admin
        )
        assert r.status_code == 200 and r.json()["profanityFilter"] == "remove"
        r = await c.get(f"/api/admin/tenants/{t['tenantId']}", headers=admin)
        assert r.json()["profanityFilter"] == "remove"
        r = await c.patch(
            f"/api/admin/tenants/{t['tenantId']}", json={"profanityFilter": "MASK"}, headers=admin
        )
        assert "profanityFilter" in error_of(r, 400)["message"]

        async def state(key: str, **body: Any) -> str:
            doc = await new_session(server, key, **body)
            r = await c.get(f"/api/sessions/{doc['sessionId']}", headers={"x-tenant-key": key})
            value: str = r.json()["profanityFilter"]
            return value

        assert await state(masked["apiKey"]) == "mask"  # the tenant's default
        assert await state(masked["apiKey"], profanityFilter="off") == "off"  # overridden
        assert await state(t["apiKey"]) == "remove"  # the default as it is now
        assert await state(t["apiKey"], profanityFilter="mask") == "mask"
        plain = await new_tenant(server)
        assert await state(plain["apiKey"]) == "off"
        r = await c.post(
            "/api/sessions",
            json={"profanityFilter": "stars"},
            headers={"x-tenant-key": t["apiKey"]},
        )
        assert "profanityFilter" in error_of(r, 400)["message"]


# -- live, replay, exports, summary ----------------------------------------------------------------


@pytest.fixture
async def swearing(sqlite_url: str) -> AsyncIterator[Running]:
    settings = make_settings(sqlite_url, recognizer=SWEARING, summarizer=SWEARY)
    async with run_server(settings) as running:
        yield running


UTTERANCE = read_wav("hello_en.wav") + silence(700)


async def read_until(ws: Any, into: Collected, finals: int, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while len(into.finals) < finals:
            into.messages.append(json.loads(await ws.recv()))


@contextlib.asynccontextmanager
async def viewer(srv: Running, token: str, last_seq: int) -> AsyncIterator[tuple[Any, Collected]]:
    url = f"{srv.ws_url}/ws/subscribe?token={token}&lastSeq={last_seq}"
    async with websockets.connect(url) as ws:
        yield ws, Collected()


async def run_meeting(srv: Running, key: str, **session: Any) -> dict[str, Any]:
    """Two utterances with a viewer watching live, a viewer reconnecting with lastSeq,
    then the end, the exports and the summary: everything a person could read."""
    doc = await new_session(srv, key, **session)
    sid = doc["sessionId"]
    seen: dict[str, Any] = {"sid": sid}
    async with (
        viewer(srv, doc["subscribeToken"], 0) as (live_ws, live),
        producer(f"{srv.ws_url}/ws/stt?token={doc['ingestToken']}") as (ws, got, task),
    ):
        await stream_pcm(ws, UTTERANCE, realtime=False, frame=3200)
        await read_until(live_ws, live, 1)
        # a viewer that saw seq 1 reconnects: replay from there on
        async with viewer(srv, doc["subscribeToken"], 1) as (again_ws, again):
            await stream_pcm(ws, UTTERANCE, realtime=False, frame=3200)
            await read_until(again_ws, again, 1)
        await read_until(live_ws, live, 2)
        # a late viewer replays everything from the store
        async with viewer(srv, doc["subscribeToken"], 0) as (late_ws, late):
            await read_until(late_ws, late, 2)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 20)
    seen.update(producer=got, live=live, again=again, late=late)
    tenant = {"x-tenant-key": key}
    async with srv.client() as c:
        for fmt in ("json", "srt", "vtt", "txt"):
            r = await c.get(f"/api/sessions/{sid}/transcript?format={fmt}", headers=tenant)
            assert r.status_code == 200, r.text
            seen[fmt] = r.text
        r = await c.post(f"/api/sessions/{sid}/summarize", json={}, headers=tenant)
        assert r.status_code == 202, r.text
        job = await wait_job(c, r.json()["jobId"], key)
        assert job["status"] == "ready", job
        seen["summary"] = (await c.get(f"/api/sessions/{sid}/summary", headers=tenant)).json()
    return seen


async def test_masked_everywhere_and_the_original_not_stored(swearing: Running) -> None:
    t = await new_tenant(swearing, profanityFilter="mask")
    seen = await run_meeting(swearing, t["apiKey"])
    shown = SHOWN["mask"]
    got: Collected = seen["producer"]
    assert [f["text"] for f in got.finals] == [shown, shown]
    assert got.interims and all(i["text"] == "Oh s*** we" for i in got.interims)
    assert [(f["seq"], f["text"]) for f in seen["live"].finals] == [(1, shown), (2, shown)]
    assert [(f["seq"], f["text"]) for f in seen["again"].finals] == [(2, shown)]
    assert [(f["seq"], f["text"]) for f in seen["late"].finals] == [(1, shown), (2, shown)]
    assert all(i["text"] == "Oh s*** we" for i in seen["live"].interims)
    lines = json.loads(seen["json"])["lines"]
    assert [x["text"] for x in lines] == [shown, shown]
    for line in lines:  # the word timings carry the same words
        assert " ".join(w["text"] for w in line["words"]) == shown
    for fmt in ("srt", "vtt", "txt", "json"):
        assert clean(seen[fmt]), seen[fmt]
        assert "s***" in seen[fmt]
    content = seen["summary"]["content"]
    assert clean(json.dumps(content)), content
    assert content["tldr"] == "2 lines. What a f****** mess."
    assert content["actionItems"] == [{"owner": "Priya", "task": "Fix this c***."}]
    # the original words are nowhere in the database
    stored = await swearing.state.repo.lines(seen["sid"])
    assert [r.text for r in stored] == [shown, shown]


async def test_session_override_remove_drops_the_word_and_its_timing(swearing: Running) -> None:
    t = await new_tenant(swearing, profanityFilter="mask")
    seen = await run_meeting(swearing, t["apiKey"], profanityFilter="remove")
    shown = SHOWN["remove"]
    assert [f["text"] for f in seen["producer"].finals] == [shown, shown]
    assert all(i["text"] == "Oh we" for i in seen["producer"].interims)
    assert [f["text"] for f in seen["late"].finals] == [shown, shown]
    lines = json.loads(seen["json"])["lines"]
    assert [x["text"] for x in lines] == [shown, shown]
    for line in lines:
        assert " ".join(w["text"] for w in line["words"]) == shown
        assert len(line["words"]) == len(final_words()) - 1
    for fmt in ("srt", "vtt", "txt", "json"):
        assert clean(seen[fmt]) and "*" not in seen[fmt], seen[fmt]
    content = seen["summary"]["content"]
    assert clean(json.dumps(content)) and "*" not in json.dumps(content), content
    assert content["decisions"] == ["Ship the on Friday."]


async def test_off_by_default_keeps_the_words(swearing: Running) -> None:
    t = await new_tenant(swearing)
    seen = await run_meeting(swearing, t["apiKey"])
    shown = SHOWN["off"]
    assert [f["text"] for f in seen["live"].finals] == [shown, shown]
    assert seen["summary"]["content"]["tldr"] == "2 lines. What a fucking mess."


def test_sweary_summarizer_is_a_plugin() -> None:
    assert SwearySummarizer.name == "sweary"


async def test_zero_ceremony_socket_takes_the_option(swearing: Running) -> None:
    t = await new_tenant(swearing)
    key = {"x-tenant-key": t["apiKey"]}
    url = f"{swearing.ws_url}/ws/stt?profanityFilter=mask"
    async with producer(url, additional_headers=key) as (ws, got, task):
        await stream_pcm(ws, UTTERANCE, realtime=False, frame=3200)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 20)
    assert [f["text"] for f in got.finals] == [SHOWN["mask"]]
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with producer(
            f"{swearing.ws_url}/ws/stt?profanityFilter=yes", additional_headers=key
        ):
            pass
    assert refused.value.response.status_code == 400
