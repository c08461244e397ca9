"""Meeting AI through the public API (issue 16): ask about a session, documents written
to a custom prompt (polled, or POSTed to a signed, retried callback), and summaries with
a prompt; on the embedded engine and on the OpenAI one against the local fake, on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Running, make_settings, read_wav, run_server
from fakes.openai_server import FakeOpenAI, Recorded, Reply, meeting_ai, running_fake_openai
from rest_helpers import client, create_session, create_tenant, error_of, wait_job
from webhook_receiver import WebhookReceiver
from wsclients import producer, stream_pcm

from mcustt import wire
from mcustt.summarizers.extractive import NO_ANSWER

FIXTURES = Path(__file__).parent / "fixtures"
#: the standup fixture's turns, one final each (seq 1…7)
TURNS: list[str] = [
    t["text"] for t in json.loads((FIXTURES / "standup_en.json").read_text())["turns"]
]
MIGRATION = 4  # "Yes, we need a feature flag. Priya will write the database migration."


async def add_finals(srv: Running, sid: str, texts: list[str]) -> None:
    """Finals as the pipeline stores them (seq 1…)."""
    for seq, text in enumerate(texts, start=1):
        await srv.state.repo.append_final(
            sid, seq=seq, text=text, lang="en-US", ts=1_700_000_000_000 + seq * 1000,
            start_ms=seq * 1000, end_ms=seq * 1000 + 900, audio_ms=seq * 1000 + 900,
        )  # fmt: skip


async def meeting(
    srv: Running, c: httpx.AsyncClient, texts: list[str] = TURNS
) -> tuple[wire.TenantWithKey, wire.SessionCreated]:
    t = await create_tenant(c)
    s = await create_session(c, t["apiKey"], title="Billing standup")
    await add_finals(srv, s["sessionId"], texts)
    return t, s


def seqs(answer: dict[str, Any]) -> list[int]:
    return [c["seq"] for c in answer["citations"]]


# -- ask, on the embedded engine ----------------------------------------------------------


async def test_ask_quotes_the_lines_that_answer(server: Running) -> None:
    async with client(server) as c:
        t, s = await meeting(server, c)
        url = f"/api/sessions/{s['sessionId']}/ask"
        key = {"x-tenant-key": t["apiKey"]}

        r = await c.post(
            url, json={"question": "Who will write the database migration?"}, headers=key
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["extractive"] is True and answer["model"] == "extractive-v1"
        assert seqs(answer) == [MIGRATION]
        assert answer["citations"] == [{"seq": MIGRATION, "text": TURNS[MIGRATION - 1]}]
        # Honest about what it is: a quotation of the line, not a generated reply.
        assert "quotes the transcript lines" in answer["answer"]
        assert TURNS[MIGRATION - 1] in answer["answer"]

        # The owner secret works too, in the body or as a header.
        q = {"question": "When do we ship the billing page?"}
        r = await c.post(url, json={**q, "ownerSecret": s["ownerSecret"]})
        assert r.status_code == 200, r.text
        assert 2 in seqs(r.json()), r.json()  # "...We decided to ship it on Friday."
        r2 = await c.post(url, json=q, headers={"x-owner-secret": s["ownerSecret"]})
        assert r2.json() == r.json()

        r = await c.post(url, json={"question": "What is the weather in Paris?"}, headers=key)
        assert r.status_code == 200
        assert r.json() == {
            "answer": NO_ANSWER,
            "citations": [],
            "extractive": True,
            "model": "extractive-v1",
        }


async def test_ask_uses_corrected_text_and_refuses_bad_requests(server: Running) -> None:
    async with client(server) as c:
        t, s = await meeting(server, c)
        sid = s["sessionId"]
        key = {"x-tenant-key": t["apiKey"]}
        url = f"/api/sessions/{sid}/ask"
        for bad in ({}, {"question": ""}, {"question": "x" * 2001}, {"question": 7}):
            error_of(await c.post(url, json=bad, headers=key), 400)
        error_of(await c.post(url, content=b"not json", headers=key), 400)
        q = {"question": "Who writes the migration?"}
        # No credential, a wrong owner secret, a read-only token: 401.
        error_of(await c.post(url, json=q), 401)
        error_of(await c.post(url, json={**q, "ownerSecret": "nope"}), 401)
        error_of(await c.post(f"{url}?t={s['embedToken']}", json=q), 401)
        # Another tenant's session, an unknown one: 404.
        other = await create_tenant(c)
        error_of(await c.post(url, json=q, headers={"x-tenant-key": other["apiKey"]}), 404)
        error_of(await c.post("/api/sessions/nosuchsess/ask", json=q, headers=key), 404)
        # An empty session has nothing to quote.
        empty = await create_session(c, t["apiKey"])
        r = await c.post(f"/api/sessions/{empty['sessionId']}/ask", json=q, headers=key)
        assert r.status_code == 200 and r.json()["citations"] == []


async def test_ask_during_a_live_session_and_after(db_url: str) -> None:
    settings = make_settings(db_url, recognizer="scripted:ScriptedRecognizer")
    async with run_server(settings) as srv, client(srv) as c:
        t = await create_tenant(c)
        s = await create_session(c, t["apiKey"])
        sid = s["sessionId"]
        key = {"x-tenant-key": t["apiKey"]}
        ask = {"question": "Which utterance came first?"}
        pcm = read_wav("pause_en.wav")  # two sentences around a long pause
        async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
            await stream_pcm(ws, pcm, realtime=False)
            for _ in range(500):
                if got.finals:
                    break
                await asyncio.sleep(0.02)
            first = got.finals[0]
            # The producer is still connected: the session is live.
            state = (await c.get(f"/api/sessions/{sid}", headers=key)).json()
            assert state["status"] == "live"
            r = await c.post(f"/api/sessions/{sid}/ask", json=ask, headers=key)
            assert r.status_code == 200, r.text
            assert {"seq": first["seq"], "text": first["text"]} in r.json()["citations"]
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 20)  # the session-end frame, then the close
        r = await c.post(f"/api/sessions/{sid}/ask", json=ask, headers=key)
        assert (await c.get(f"/api/sessions/{sid}", headers=key)).json()["status"] == "ended"
        assert r.status_code == 200 and first["seq"] in seqs(r.json())


async def test_ask_is_rate_limited_with_summarize(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, rate_summarize="3/minute")
    async with run_server(settings) as srv, client(srv) as c:
        t, s = await meeting(srv, c)
        sid = s["sessionId"]
        key = {"x-tenant-key": t["apiKey"]}
        q = {"question": "Who will write the database migration?"}
        for _ in range(2):
            assert (await c.post(f"/api/sessions/{sid}/ask", json=q, headers=key)).is_success
        r = await c.post(f"/api/sessions/{sid}/summarize", headers=key)
        assert r.status_code == 202
        # One budget: asking, summarizing and documents spend from it alike.
        r = await c.post(f"/api/sessions/{sid}/ask", json=q, headers=key)
        error_of(r, 429, "RATE_LIMITED")
        assert int(r.headers["retry-after"]) >= 1
        error_of(await c.post(f"/api/sessions/{sid}/summarize", headers=key), 429)
        error_of(
            await c.post(f"/api/sessions/{sid}/documents", json={"prompt": "x"}, headers=key),
            429,
        )


# -- documents and prompts, on the embedded engine -----------------------------------------


async def test_documents_need_a_language_model(server: Running) -> None:
    async with client(server) as c:
        t, s = await meeting(server, c)
        sid = s["sessionId"]
        r = await c.post(
            f"/api/sessions/{sid}/documents",
            json={"prompt": "Write the minutes."},
            headers={"x-tenant-key": t["apiKey"]},
        )
        err = error_of(r, 503, "SUMMARIZER_UNCONFIGURED")
        assert "language model" in err["message"]
        # Nothing was queued: there is no document to poll.
        r = await c.get(
            f"/api/sessions/{sid}/documents/doc_x", headers={"x-tenant-key": t["apiKey"]}
        )
        error_of(r, 404, "DOCUMENT_NOT_FOUND")


async def test_the_extractive_summary_ignores_a_prompt(server: Running) -> None:
    async with client(server) as c:
        t, s = await meeting(server, c)
        sid = s["sessionId"]
        key = {"x-tenant-key": t["apiKey"]}
        url = f"/api/sessions/{sid}/summarize"
        error_of(await c.post(url, json={"prompt": "x" * 4001}, headers=key), 400)
        error_of(await c.post(url, json={"prompt": ""}, headers=key), 400)
        r = await c.post(url, json={"prompt": "Only the decisions, please."}, headers=key)
        assert r.status_code == 202, r.text
        job = await wait_job(c, r.json()["jobId"], t["apiKey"])
        assert job["status"] == "ready" and job["result"]["model"] == "extractive-v1"
        assert job["result"]["content"]["decisions"]


# -- the OpenAI engine, against the local fake ---------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with running_fake_openai() as fake:
        fake.responder = meeting_ai
        yield fake


def ai_settings(db_url: str, fake: FakeOpenAI, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "summarizer": "openai",
        "openai_api_key": "sk-test-123",
        "openai_base_url": fake.base_url,
        "openai_timeout_s": 5.0,
        "job_poll_s": 0.1,
        # The callback receiver listens on 127.0.0.1.
        "allow_private_urls": True,
        "webhook_poll_s": 0.05,
        "webhook_retry_base_s": 0.05,
        **overrides,
    }
    return make_settings(db_url, **values)


@pytest.fixture
async def ai(db_url: str, fake: FakeOpenAI) -> AsyncIterator[Running]:
    async with run_server(ai_settings(db_url, fake)) as srv:
        yield srv


def calls(fake: FakeOpenAI, schema: str) -> list[Recorded]:
    return [r for r in fake.requests if r.schema_name == schema]


async def wait_document(
    c: httpx.AsyncClient, url: str, headers: dict[str, str], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await c.get(url, headers=headers)
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        if doc["status"] != "pending":
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} stayed pending")


async def test_ask_with_a_language_model(ai: Running, fake: FakeOpenAI) -> None:
    async with client(ai) as c:
        t, s = await meeting(ai, c)
        r = await c.post(
            f"/api/sessions/{s['sessionId']}/ask",
            json={"question": "Who will write the database migration?"},
            headers={"x-tenant-key": t["apiKey"]},
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["extractive"] is False and answer["model"] == "gpt-4o-mini"
        assert answer["answer"] == "fake answer citing 1 lines"
        assert answer["citations"] == [{"seq": MIGRATION, "text": TURNS[MIGRATION - 1]}]
        [request] = calls(fake, "meeting_answer")
        # The model saw the numbered transcript and the question, asked for strict JSON.
        assert f"[{MIGRATION}] {TURNS[MIGRATION - 1]}" in request.user_text
        assert "Question: Who will write the database migration?" in request.user_text
        assert request.body["response_format"]["json_schema"]["strict"] is True


async def test_a_model_citing_lines_that_do_not_exist_is_corrected(
    ai: Running, fake: FakeOpenAI
) -> None:
    fake.script.extend(
        [
            Reply.text("not json"),  # asked again once, the problem spelled out
            Reply.json({"answer": "Priya does.", "citations": [4, 99, 4, -1]}),
        ]
    )
    async with client(ai) as c:
        t, s = await meeting(ai, c)
        r = await c.post(
            f"/api/sessions/{s['sessionId']}/ask",
            json={"question": "Who writes it?"},
            headers={"x-tenant-key": t["apiKey"]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["answer"] == "Priya does."
        assert seqs(r.json()) == [MIGRATION]
        assert "That reply was not valid" in fake.requests[-1].user_text


async def test_a_failing_model_is_a_502_for_ask(ai: Running, fake: FakeOpenAI) -> None:
    fake.responder = lambda _: Reply.fail(401, "Incorrect API key provided")
    async with client(ai) as c:
        t, s = await meeting(ai, c)
        r = await c.post(
            f"/api/sessions/{s['sessionId']}/ask",
            json={"question": "Who writes it?"},
            headers={"x-tenant-key": t["apiKey"]},
        )
        err = error_of(r, 502, "SUMMARIZER_FAILED")
        assert "sk-test-123" not in r.text and "rejected" in err["message"]


async def test_a_document_polled_until_ready(ai: Running, fake: FakeOpenAI) -> None:
    async with client(ai) as c:
        t, s = await meeting(ai, c)
        sid = s["sessionId"]
        prompt = "Summarize key decisions and action items"
        r = await c.post(
            f"/api/sessions/{sid}/documents",
            json={"prompt": prompt, "ownerSecret": s["ownerSecret"]},
        )
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["status"] == "pending" and "callbackSecret" not in accepted
        assert accepted["poll"] == f"/api/sessions/{sid}/documents/{accepted['docId']}"
        key = {"x-tenant-key": t["apiKey"]}
        doc = await wait_document(c, accepted["poll"], key)
        assert doc["status"] == "ready", doc
        assert doc["docId"] == accepted["docId"] and doc["prompt"] == prompt
        assert doc["markdown"] == f"# Fake document\n\n{prompt}\n\nLines seen: {len(TURNS)}"
        assert doc["model"] == "gpt-4o-mini"
        assert doc["createdAt"] <= doc["updatedAt"]
        [request] = calls(fake, "meeting_document")
        assert TURNS[MIGRATION - 1] in request.user_text
        # The owner may poll too; another tenant and a wrong id may not see it.
        mine = await c.get(accepted["poll"], headers={"x-owner-secret": s["ownerSecret"]})
        assert mine.json() == doc
        other = await create_tenant(c)
        error_of(await c.get(accepted["poll"], headers={"x-tenant-key": other["apiKey"]}), 404)
        error_of(await c.get(f"/api/sessions/{sid}/documents/doc_nope", headers=key), 404)
        error_of(await c.get(f"/api/sessions/{sid}/documents/doc%00x", headers=key), 404)
        # Bad bodies.
        url = f"/api/sessions/{sid}/documents"
        for bad in (
            {},
            {"prompt": ""},
            {"prompt": "x" * 4001},
            {"prompt": "x", "callbackUrl": "ftp://x"},
        ):
            error_of(await c.post(url, json=bad, headers=key), 400)


async def test_a_document_posted_to_a_signed_retried_callback(
    ai: Running, fake: FakeOpenAI
) -> None:
    async with client(ai) as c, WebhookReceiver(fail_first=2) as rx, WebhookReceiver() as hooks:
        t, s = await meeting(ai, c)
        sid = s["sessionId"]
        key = {"x-tenant-key": t["apiKey"]}
        # A tenant endpoint subscribed to document.ready hears of it too.
        hook = await c.post(
            "/api/webhooks",
            json={"url": hooks.url("/events"), "events": ["document.ready"]},
            headers=key,
        )
        assert hook.status_code == 201, hook.text
        r = await c.post(
            f"/api/sessions/{sid}/documents",
            json={"prompt": "Action items as a checklist", "callbackUrl": rx.url("/done")},
            headers=key,
        )
        assert r.status_code == 202, r.text
        accepted = r.json()
        secret = accepted["callbackSecret"]
        assert secret.startswith("whsec_")

        [got] = await rx.wait_for(1, path="/done")
        body = rx.verify(got, secret)  # the Standard Webhooks signature holds
        assert body == got.json()
        assert body["status"] == "success" and body["sessionId"] == sid
        assert body["docId"] == accepted["docId"] and body["model"] == "gpt-4o-mini"
        assert body["documentText"].startswith("# Fake document\n\nAction items as a checklist")
        assert body["createdAt"].endswith("Z")
        # Retried after the receiver's failures, with one webhook-id throughout.
        attempts = [req for req in rx.requests if req.path == "/done"]
        assert len(attempts) >= 3 and attempts[0].status == 500
        assert {a.webhook_id for a in attempts} == {got.webhook_id}

        [event] = await hooks.wait_for(1)
        payload = hooks.verify(event, hook.json()["secret"])
        assert payload["type"] == "document.ready"
        assert payload["data"]["docId"] == accepted["docId"]
        assert payload["data"]["documentText"] == body["documentText"]
        # Polling shows the same document.
        doc = (await c.get(accepted["poll"], headers=key)).json()
        assert doc["status"] == "ready" and doc["markdown"] == body["documentText"]
        await asyncio.sleep(0.3)
        assert len(rx.delivered) == 1 and len(hooks.requests) == 1  # never duplicated


async def test_a_failed_document_says_why(ai: Running, fake: FakeOpenAI) -> None:
    fake.responder = lambda _: Reply.fail(400, "context length exceeded")
    async with client(ai) as c, WebhookReceiver() as rx:
        t, s = await meeting(ai, c)
        r = await c.post(
            f"/api/sessions/{s['sessionId']}/documents",
            json={"prompt": "Minutes", "callbackUrl": rx.url("/done")},
            headers={"x-tenant-key": t["apiKey"]},
        )
        [got] = await rx.wait_for(1)
        body = rx.verify(got, r.json()["callbackSecret"])
        assert body["status"] == "failure" and "context length exceeded" in body["error"]
        assert "documentText" not in body
        # Polling says the same.
        key = {"x-tenant-key": t["apiKey"]}
        doc = await wait_document(c, r.json()["poll"], key)
        assert doc["status"] == "failed" and "markdown" not in doc
        assert "context length exceeded" in doc["error"]
        # Retention deletes an ended session's documents with it.
        assert (await c.delete(f"/api/sessions/{s['sessionId']}", headers=key)).is_success
        assert await ai.state.repo.delete_ended_sessions(ended_before=time.time() + 60) >= 1
        error_of(await c.get(r.json()["poll"], headers=key), 404)


async def test_a_callback_url_the_guard_refuses_is_400(sqlite_url: str, fake: FakeOpenAI) -> None:
    settings = ai_settings(sqlite_url, fake, allow_private_urls=False)
    async with run_server(settings) as srv, client(srv) as c:
        t, s = await meeting(srv, c)
        for url in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest", "http://[::1]/"):
            r = await c.post(
                f"/api/sessions/{s['sessionId']}/documents",
                json={"prompt": "Minutes", "callbackUrl": url},
                headers={"x-tenant-key": t["apiKey"]},
            )
            error_of(r, 400, "URL_NOT_ALLOWED")
    assert not calls(fake, "meeting_document")


async def test_a_summary_follows_the_prompt(ai: Running, fake: FakeOpenAI) -> None:
    async with client(ai) as c:
        t, s = await meeting(ai, c)
        sid = s["sessionId"]
        r = await c.post(
            f"/api/sessions/{sid}/summarize",
            json={"prompt": "Write it for the finance team.", "ownerSecret": s["ownerSecret"]},
        )
        assert r.status_code == 202, r.text
        job = await wait_job(c, r.json()["jobId"], t["apiKey"])
        assert job["status"] == "ready", job
        [request] = calls(fake, "meeting_summary")
        assert "Write it for the finance team." in request.system_text
        # Without a prompt, none is added.
        r = await c.post(f"/api/sessions/{sid}/summarize", headers={"x-tenant-key": t["apiKey"]})
        await wait_job(c, r.json()["jobId"], t["apiKey"])
        assert "finance" not in calls(fake, "meeting_summary")[-1].system_text


async def test_long_meetings_are_chunked(db_url: str, fake: FakeOpenAI) -> None:
    # A tiny context budget: the standup said ten times is many chunks.
    settings = ai_settings(db_url, fake, openai_context_chars=400)
    async with run_server(settings) as srv, client(srv) as c:
        t, s = await meeting(srv, c, TURNS * 10)
        sid = s["sessionId"]
        key = {"x-tenant-key": t["apiKey"]}
        r = await c.post(
            f"/api/sessions/{sid}/ask",
            json={"question": "Who will write the database migration?"},
            headers=key,
        )
        assert r.status_code == 200, r.text
        asks = calls(fake, "meeting_answer")
        maps = [a for a in asks if "This is part" in a.user_text]
        assert len(maps) >= 5 and len(asks) == len(maps) + 1  # map, then one reduce
        assert all(len(a.user_text) < 1000 for a in maps)
        # Every mention of the migration, across the chunks, is cited.
        migration = [MIGRATION + 7 * i for i in range(10)]
        assert seqs(r.json()) == migration

        r = await c.post(f"/api/sessions/{sid}/documents", json={"prompt": "Minutes"}, headers=key)
        doc = await wait_document(c, r.json()["poll"], key)
        assert doc["status"] == "ready", doc
        docs = calls(fake, "meeting_document")
        assert len(docs) >= 3
        assert doc["markdown"].startswith("# Fake document\n\nMinutes")
