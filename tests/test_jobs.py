"""Summaries (§11), batch jobs (§12) and the durable job runner."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ADMIN,
    FIXTURES,
    Node,
    Running,
    create_pg_database,
    drop_pg_database,
    make_settings,
    new_session,
    new_tenant,
    run_server,
    spawn_node,
)
from rest_helpers import wait_job
from sqlmodel import select

from mcustt.store.db import migrate
from mcustt.store.models import Job

STANDUP = json.loads((FIXTURES / "standup_en.json").read_text())


def big_text(tag: str, chars: int = 13_000) -> str:
    line = f"{tag} we reviewed the billing page and agreed to ship it on Friday."
    return "\n".join([line] * (chars // len(line) + 1))


async def add_lines(srv: Running, sid: str, texts: list[str]) -> None:
    for seq, text in enumerate(texts, 1):
        await srv.state.repo.append_final(
            sid,
            seq=seq,
            text=text,
            lang="en-US",
            ts=0,
            start_ms=seq * 1000,
            end_ms=seq * 1000 + 900,
            audio_ms=0,
        )


async def test_session_end_summarizes_the_meeting(server: Running) -> None:
    t = await new_tenant(server)
    s = await new_session(server, t["apiKey"])
    await add_lines(server, s["sessionId"], [turn["text"] for turn in STANDUP["turns"]])
    key = {"x-tenant-key": t["apiKey"]}
    async with server.client() as c:
        r = await c.get(f"/api/sessions/{s['sessionId']}/summary", headers=key)
        assert (r.status_code, r.json()) == (202, {"status": "pending"})
        await c.delete(f"/api/sessions/{s['sessionId']}", headers=key)
        for _ in range(100):
            r = await c.get(f"/api/sessions/{s['sessionId']}/summary?t={s['embedToken']}")
            if r.status_code == 200:
                break
            await asyncio.sleep(0.1)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "ready" and doc["model"] == "extractive-v1" and doc["lang"] == "en-US"
    content = doc["content"]
    assert any("friday" in d.lower() for d in content["decisions"])
    owners = {a["owner"] for a in content["actionItems"]}
    assert {"Priya", "Marcus"} <= owners
    assert any("feature flag" in qa.lower() for qa in content["qa"])
    assert (doc["fromSeq"], doc["toSeq"]) == (1, len(STANDUP["turns"]))


async def test_summarize_window_and_auth(sqlite_server: Running) -> None:
    srv = sqlite_server
    t = await new_tenant(srv)
    other = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"])
    await add_lines(srv, s["sessionId"], [turn["text"] for turn in STANDUP["turns"]])
    url = f"/api/sessions/{s['sessionId']}/summarize"
    async with srv.client() as c:
        assert (await c.post(url, json={"fromSeq": 1, "toSeq": 2})).status_code == 401
        assert (
            await c.post(url, json={}, headers={"x-tenant-key": other["apiKey"]})
        ).status_code == 404
        assert (await c.post(f"{url}?t={s['embedToken']}", json={})).status_code == 401
        assert (
            await c.post(url, json={"fromSeq": 5, "toSeq": 2, "ownerSecret": s["ownerSecret"]})
        ).status_code == 400
        r = await c.post(url, json={"fromSeq": 1, "toSeq": 2, "ownerSecret": s["ownerSecret"]})
        assert r.status_code == 202 and r.json()["status"] == "pending"
        for _ in range(100):
            r = await c.get(
                f"/api/sessions/{s['sessionId']}/summary", headers={"x-tenant-key": t["apiKey"]}
            )
            if r.status_code == 200:
                break
            await asyncio.sleep(0.1)
    doc = r.json()
    assert (doc["fromSeq"], doc["toSeq"]) == (1, 2)
    assert any("friday" in d.lower() for d in doc["content"]["decisions"])
    assert not doc["content"]["actionItems"]  # Priya and Marcus speak after seq 2


async def test_failed_summary_reports_reason(sqlite_url: str) -> None:
    async with run_server(make_settings(sqlite_url, summarizer="plugins:FailingSummarizer")) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        key = {"x-tenant-key": t["apiKey"]}
        async with srv.client() as c:
            await c.delete(f"/api/sessions/{s['sessionId']}", headers=key)
            for _ in range(100):
                r = await c.get(f"/api/sessions/{s['sessionId']}/summary", headers=key)
                if r.json()["status"] == "failed":
                    break
                await asyncio.sleep(0.1)
        assert r.status_code == 202
        assert r.json() == {"status": "failed", "error": "the model refused: quota exhausted"}
        state = (await srv.client().get(f"/api/sessions/{s['sessionId']}", headers=key)).json()
        assert state["summaryStatus"] == "failed"


async def test_unconfigured_summarizer_is_503(sqlite_url: str) -> None:
    async with run_server(
        make_settings(sqlite_url, summarizer="openai", openai_api_key=None)
    ) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        key = {"x-tenant-key": t["apiKey"]}
        async with srv.client() as c:
            r = await c.get(f"/api/sessions/{s['sessionId']}/summary", headers=key)
            assert r.status_code == 503 and r.json()["error"]["code"] == "SUMMARIZER_UNCONFIGURED"
            assert "retry-after" in r.headers
            r = await c.post("/api/transcribe-summary", json={"text": "hello"}, headers=key)
            assert r.status_code == 503
            r = await c.get("/readyz")
            assert r.status_code == 503 and r.json()["checks"]["summarizer"].startswith("failed")


async def test_batch_inline_and_async(server: Running) -> None:
    t = await new_tenant(server)
    other = await new_tenant(server)
    key = {"x-tenant-key": t["apiKey"]}
    subtitles = [
        {"text": turn["text"], "speaker": turn["speaker"], "ts": turn["start_s"]}
        for turn in STANDUP["turns"]
    ]
    async with server.client() as c:
        r = await c.post(
            "/api/transcribe-summary",
            json={"subtitles": subtitles, "want": ["summary", "transcript"]},
            headers=key,
        )
        assert r.status_code == 200
        doc = r.json()
        assert doc["language"] == "en-US" and doc["transcript"].startswith("A: Good morning")
        assert {"Priya", "Marcus"} <= {a["owner"] for a in doc["summary"]["actionItems"]}
        r = await c.post("/api/transcribe-summary", json={"text": big_text("alpha")}, headers=key)
        assert r.status_code == 202
        job = r.json()
        assert job["status"] == "queued" and job["poll"] == f"/api/jobs/{job['jobId']}"
        assert (
            await c.get(job["poll"], headers={"x-tenant-key": other["apiKey"]})
        ).status_code == 404
        done = await wait_job(c, job["jobId"], t["apiKey"])
        assert done["status"] == "ready" and any(
            "friday" in d.lower() for d in done["result"]["summary"]["decisions"]
        )
        for bad in ({}, {"text": "   "}, {"text": "x", "want": ["poetry"]}, {"subtitles": "nope"}):
            r = await c.post("/api/transcribe-summary", json=bad, headers=key)
            assert r.status_code == 400 and r.json()["error"]["code"] == "BAD_REQUEST", bad
        assert (await c.post("/api/transcribe-summary", json={"text": "x"})).status_code == 401


async def test_idempotency_sequential_concurrent_and_conflicting(server: Running) -> None:
    t = await new_tenant(server)
    other = await new_tenant(server)
    body = {"text": big_text("beta")}
    idem = {"x-tenant-key": t["apiKey"], "Idempotency-Key": "k-" + uuid.uuid4().hex}
    async with server.client() as c:
        first = (await c.post("/api/transcribe-summary", json=body, headers=idem)).json()
        again = (await c.post("/api/transcribe-summary", json=body, headers=idem)).json()
        assert again["jobId"] == first["jobId"]
        r = await c.post("/api/transcribe-summary", json={"text": big_text("gamma")}, headers=idem)
        assert r.status_code == 422 and r.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        # the same key from another tenant is another job
        theirs = (
            await c.post(
                "/api/transcribe-summary",
                json=body,
                headers={**idem, "x-tenant-key": other["apiKey"]},
            )
        ).json()
        assert theirs["jobId"] != first["jobId"]
        # concurrent duplicates: one job
        idem2 = {**idem, "Idempotency-Key": "k-" + uuid.uuid4().hex}
        replies = await asyncio.gather(
            *[c.post("/api/transcribe-summary", json=body, headers=idem2) for _ in range(8)]
        )
        assert {r.status_code for r in replies} == {202}
        assert len({r.json()["jobId"] for r in replies}) == 1
        # a small keyed request runs inline once; its retry gets the stored result
        small = {"text": "We agreed to ship on Friday.", "want": ["summary"]}
        idem3 = {**idem, "Idempotency-Key": "k-" + uuid.uuid4().hex}
        a = await c.post("/api/transcribe-summary", json=small, headers=idem3)
        b = await c.post("/api/transcribe-summary", json=small, headers=idem3)
        assert a.status_code == b.status_code == 200 and a.json() == b.json()
    async with server.state.db.session() as s:
        rows = (
            await s.exec(select(Job).where(Job.idempotency_key == idem2["Idempotency-Key"]))
        ).all()
    assert len(rows) == 1


def _runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _tenant_key(node: Node) -> str:
    async with node.client() as c:
        r = await c.post(
            "/api/admin/tenants",
            json={"name": "jobs"},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
    return str(r.json()["apiKey"])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_killed_node_job_completes_once_after_restart(backend: str, tmp_path: Path) -> None:
    url = create_pg_database() if backend == "postgres" else f"sqlite:///{tmp_path}/jobs.db"
    migrate(url)
    runlog = tmp_path / "runs.jsonl"
    env = {
        "MCUSTT_DATABASE_URL": url,
        "MCUSTT_SUMMARIZER": "plugins:SlowSummarizer",
        "MCUSTT_RECOGNIZER": "null",
        "MCUSTT_JOB_LEASE_S": "2",
        "MCUSTT_JOB_POLL_S": "0.2",
        "MCUSTT_TEST_RUNLOG": str(runlog),
        "MCUSTT_TEST_SLOW_S": "3",
    }
    try:
        async with spawn_node(env, tmp_path / "a.log") as a:
            key = await _tenant_key(a)
            async with a.client() as c:
                job = (
                    await c.post(
                        "/api/transcribe-summary",
                        json={"text": big_text("delta")},
                        headers={"x-tenant-key": key},
                    )
                ).json()
            for _ in range(100):
                if any(r["event"] == "start" for r in _runs(runlog)):
                    break
                await asyncio.sleep(0.05)
            a.proc.send_signal(signal.SIGKILL)  # dies mid-job, holding the lease
        assert [r["event"] for r in _runs(runlog)] == ["start"]
        async with (
            spawn_node({**env, "MCUSTT_TEST_SLOW_S": "0.2"}, tmp_path / "b.log") as b,
            b.client() as c,
        ):
            done = await wait_job(c, job["jobId"], key, timeout=30)
        assert done["status"] == "ready" and done["attempts"] == 2
        events = [r["event"] for r in _runs(runlog)]
        assert events == ["start", "start", "end"]  # completed exactly once
    finally:
        if backend == "postgres":
            drop_pg_database(url)


async def test_two_nodes_never_run_a_job_twice(pg_url: str, tmp_path: Path) -> None:
    runlog = tmp_path / "runs.jsonl"
    env = {
        "MCUSTT_DATABASE_URL": pg_url,
        "MCUSTT_SUMMARIZER": "plugins:SlowSummarizer",
        "MCUSTT_RECOGNIZER": "null",
        "MCUSTT_JOB_POLL_S": "0.05",
        "MCUSTT_TEST_RUNLOG": str(runlog),
        "MCUSTT_TEST_SLOW_S": "0.1",
        "MCUSTT_RATE_SUMMARIZE": "1000/minute",
    }
    async with spawn_node(env, tmp_path / "a.log") as a, spawn_node(env, tmp_path / "b.log"):
        key = await _tenant_key(a)
        tags = [f"job{i:02d}" for i in range(24)]
        async with a.client() as c:
            jobs = await asyncio.gather(
                *[
                    c.post(
                        "/api/transcribe-summary",
                        json={"text": big_text(tag)},
                        headers={"x-tenant-key": key},
                    )
                    for tag in tags
                ]
            )
            for r in jobs:
                await wait_job(c, r.json()["jobId"], key)
    runs = _runs(runlog)
    starts = [r["tag"] for r in runs if r["event"] == "start"]
    assert sorted(starts) == tags  # each job ran once
    assert len({r["pid"] for r in runs}) == 2  # and both nodes took part
