"""Webhooks and triggers (issue 16), through the public API, against a real receiver."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import Running, make_settings, new_session, new_tenant, run_server
from rest_helpers import error_of
from sqlmodel import col, select
from standardwebhooks import WebhookVerificationError
from webhook_receiver import WebhookReceiver

from mcustt import netguard
from mcustt.store.models import WebhookDelivery
from mcustt.store.webhooks import record_callback, record_event
from mcustt.webhooks import MAX_ATTEMPTS, RETRY_STEPS, new_secret, retry_delay

FAST = {
    "allow_private_urls": True,
    "webhook_retry_base_s": 0.05,
    "webhook_poll_s": 0.1,
    "webhook_timeout_s": 5.0,
}


@pytest.fixture
async def hooks_server(db_url: str) -> AsyncIterator[Running]:
    async with run_server(make_settings(db_url, **FAST)) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as rx:
        yield rx


async def register(c: httpx.AsyncClient, key: str, url: str, events: list[str]) -> dict[str, Any]:
    r = await c.post(
        "/api/webhooks", json={"url": url, "events": events}, headers={"x-tenant-key": key}
    )
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def record(
    srv: Running, tenant_id: str, event: str, session_id: str | None, data: dict[str, Any]
) -> None:
    """An event recorded the way the store records them (in a committed transaction)."""
    async with srv.state.db.session() as s:
        await record_event(s, tenant_id=tenant_id, event=event, session_id=session_id, data=data)
        await s.commit()


async def deliveries(c: httpx.AsyncClient, key: str, hook_id: str) -> list[dict[str, Any]]:
    r = await c.get(f"/api/webhooks/{hook_id}/deliveries", headers={"x-tenant-key": key})
    assert r.status_code == 200, r.text
    listed: list[dict[str, Any]] = r.json()["deliveries"]
    return listed


async def settled(c: httpx.AsyncClient, key: str, hook_id: str, n: int) -> list[dict[str, Any]]:
    """The delivery log once ``n`` deliveries are delivered (the receiver may have
    answered before the outcome was written)."""
    for _ in range(200):
        log = await deliveries(c, key, hook_id)
        if sum(d["status"] == "delivered" for d in log) >= n:
            return log
        await asyncio.sleep(0.05)
    raise AssertionError(f"not delivered: {log}")


# -- delivery -------------------------------------------------------------------------------


async def test_session_ended_is_retried_signed_logged_and_redelivered(
    hooks_server: Running, receiver: WebhookReceiver
) -> None:
    srv = hooks_server
    t = await new_tenant(srv)
    key = t["apiKey"]
    receiver.fail_next(2)
    async with srv.client() as c:
        hook = await register(c, key, receiver.url(), ["session.ended"])
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["session.ended"]
        s = await new_session(srv, key, title="Weekly standup")
        r = await c.delete(f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": key})
        assert r.status_code in (200, 204), r.text
        [got] = await receiver.wait_for(1)
        # two 500s, then the same event again: one webhook-id for every attempt
        assert [x.status for x in receiver.requests] == [500, 500, 200]
        assert len({x.webhook_id for x in receiver.requests}) == 1
        body = receiver.verify(got, hook["secret"])
        assert body["type"] == "session.ended"
        data = body["data"]
        assert data["sessionId"] == s["sessionId"] and data["title"] == "Weekly standup"
        assert data["endAt"].endswith("Z") and data["language"] == "en-US"
        with pytest.raises(WebhookVerificationError):
            receiver.verify(got, new_secret())
        [logged] = await settled(c, key, hook["id"], 1)
        assert logged["eventId"] == got.webhook_id and logged["type"] == "session.ended"
        assert (logged["attempts"], logged["lastStatus"], logged["lastError"]) == (3, 200, None)

        r = await c.post(
            f"/api/webhooks/{hook['id']}/deliveries/{logged['id']}/redeliver",
            headers={"x-tenant-key": key},
        )
        assert r.status_code == 202, r.text
        again = await receiver.wait_for(2)
        assert again[1].webhook_id == got.webhook_id  # the receiver's dedup key
        receiver.verify(again[1], hook["secret"])
        [logged] = await settled(c, key, hook["id"], 1)
        assert logged["attempts"] == 1
        r = await c.post(
            f"/api/webhooks/{hook['id']}/deliveries/dlv_nope/redeliver",
            headers={"x-tenant-key": key},
        )
        error_of(r, 404, "DELIVERY_NOT_FOUND")


async def test_summary_ready_and_the_polling_triggers(
    hooks_server: Running, receiver: WebhookReceiver
) -> None:
    srv = hooks_server
    t = await new_tenant(srv)
    key = t["apiKey"]
    async with srv.client() as c:
        hook = await register(c, key, receiver.url(), ["summary.ready", "session.ended"])
        s = await new_session(srv, key, title="Planning")
        sid = s["sessionId"]
        texts = [
            "We decided to ship the billing page on Friday.",
            "Priya will update the migration script.",
        ]
        for seq, text in enumerate(texts, 1):
            await srv.state.repo.append_final(
                sid, seq=seq, text=text, lang="en-US", ts=0, start_ms=seq, end_ms=seq, audio_ms=0
            )
        await c.delete(f"/api/sessions/{sid}", headers={"x-tenant-key": key})
        got = await receiver.wait_for(2)
        bodies = [receiver.verify(x, hook["secret"]) for x in got]
        # ordered per session: the end before the summary it caused
        assert [b["type"] for b in bodies] == ["session.ended", "summary.ready"]
        ready = bodies[1]["data"]
        assert ready["sessionId"] == sid and ready["model"] == "extractive-v1"
        assert ready["markdownBody"].startswith("## Summary")
        assert ready["summary"]["tldr"]

        bearer = {"authorization": f"Bearer {key}"}
        r = await c.get("/api/triggers/session-ended", headers=bearer)
        assert r.status_code == 200, r.text
        [ended] = r.json()
        assert ended["id"] == got[0].webhook_id and ended["sessionId"] == sid
        assert ended["title"] == "Planning" and ended["lineCount"] == 2
        assert {"startAt", "endAt", "language"} <= set(ended)
        r = await c.get("/api/triggers/summary-ready", headers={"x-tenant-key": key})
        [summary] = r.json()
        assert summary["id"] == got[1].webhook_id and summary["sessionTitle"] == "Planning"
        assert summary["markdownBody"] == ready["markdownBody"]
        assert summary["model"] == "extractive-v1" and summary["createdAt"].endswith("Z")
        # another tenant sees none of it
        other = await new_tenant(srv)
        r = await c.get("/api/triggers/session-ended", headers={"x-tenant-key": other["apiKey"]})
        assert r.json() == []
        assert (await c.get("/api/triggers/summary-ready")).status_code == 401


async def test_job_finished_for_a_batch_job(sqlite_url: str) -> None:
    async with run_server(make_settings(sqlite_url, **FAST)) as srv, WebhookReceiver() as rx:
        t = await new_tenant(srv)
        key = {"x-tenant-key": t["apiKey"]}
        async with srv.client() as c:
            hook = await register(c, t["apiKey"], rx.url(), ["job.finished", "summary.ready"])
            line = "We reviewed the billing page and agreed to ship it on Friday."
            text = "\n".join([line] * 250)  # past the inline limit: a job
            r = await c.post("/api/transcribe-summary", json={"text": text}, headers=key)
            assert r.status_code == 202, r.text
            job_id = r.json()["jobId"]
            [got] = await rx.wait_for(1)
        body = rx.verify(got, hook["secret"])
        assert body["type"] == "job.finished"
        assert body["data"]["jobId"] == job_id and body["data"]["kind"] == "batch_summary"
        assert (body["data"]["status"], body["data"]["error"]) == ("ready", None)


async def test_triggers_list_newest_first_at_most_50(sqlite_url: str) -> None:
    async with run_server(make_settings(sqlite_url, **FAST)) as srv:
        t = await new_tenant(srv)
        for i in range(53):
            await record(
                srv, t["tenantId"], "session.ended", None, {"sessionId": f"s{i}", "title": str(i)}
            )
        async with srv.client() as c:
            r = await c.get("/api/triggers/session-ended", headers={"x-tenant-key": t["apiKey"]})
        items = r.json()
        assert len(items) == 50 and [x["title"] for x in items[:2]] == ["52", "51"]
        assert len({x["id"] for x in items}) == 50
        again = (
            await srv.client().get(
                "/api/triggers/session-ended", headers={"x-tenant-key": t["apiKey"]}
            )
        ).json()
        assert [x["id"] for x in again] == [x["id"] for x in items]  # stable ids


async def test_ordered_per_session_one_in_flight(
    hooks_server: Running,
) -> None:
    srv = hooks_server
    t = await new_tenant(srv)
    async with WebhookReceiver(delay_s=0.05) as rx, srv.client() as c:
        hook = await register(c, t["apiKey"], rx.url(), ["job.finished"])
        rx.fail_next(3)
        for n in range(6):
            await record(srv, t["tenantId"], "job.finished", "sessA", {"n": n})
        await rx.wait_for(6)
        order = [x.json()["data"]["n"] for x in rx.requests]
        assert order == sorted(order), order  # no later event before an earlier one
        assert [x.json()["data"]["n"] for x in rx.delivered] == list(range(6))
        assert rx.max_concurrent == 1
        await settled(c, t["apiKey"], hook["id"], 6)


async def test_one_off_callback_is_the_callers_body_signed(
    hooks_server: Running, receiver: WebhookReceiver
) -> None:
    srv = hooks_server
    t = await new_tenant(srv)
    secret = new_secret()
    receiver.fail_next(1)
    doc = {"status": "success", "docId": "doc_1", "documentText": "# Notes"}
    async with srv.state.db.session() as s:
        await record_callback(
            s,
            tenant_id=t["tenantId"],
            session_id=None,
            url=receiver.url("/cb"),
            secret=secret,
            event="document.ready",
            data=doc,
        )
        await s.commit()
    [got] = await receiver.wait_for(1, path="/cb")
    assert receiver.verify(got, secret) == doc
    assert len(receiver.requests) == 2
    # not a trigger item, and not sent to the tenant's endpoints
    async with srv.client() as c:
        r = await c.get("/api/triggers/summary-ready", headers={"x-tenant-key": t["apiKey"]})
    assert r.json() == []


async def test_two_nodes_deliver_each_event_once(pg_url: str) -> None:
    settings = make_settings(pg_url, **FAST, webhook_workers=3)
    async with (
        WebhookReceiver(delay_s=0.02) as rx,
        run_server(settings) as a,
        run_server(make_settings(pg_url, **FAST, webhook_workers=3)) as b,
    ):
        t = await new_tenant(a)
        async with a.client() as c:
            one = await register(c, t["apiKey"], rx.url("/one"), ["job.finished"])
        async with b.client() as c:
            two = await register(c, t["apiKey"], rx.url("/two"), ["job.finished"])
        rx.fail_next(4)
        sent = 0
        for n in range(24):
            node = a if n % 2 else b
            await record(node, t["tenantId"], "job.finished", f"s{n % 4}", {"n": n})
            sent += 1
        one_got = await rx.wait_for(sent, path="/one")
        two_got = await rx.wait_for(sent, path="/two")
        await asyncio.sleep(0.5)  # time for a duplicate to show up, were there one
        # six workers on two nodes, yet one request at a time per endpoint
        assert rx.max_concurrent_by_path == {"/one": 1, "/two": 1}
        for path, got, hook in (("/one", one_got, one), ("/two", two_got, two)):
            delivered = [x for x in rx.delivered if x.path == path]
            ids = Counter(x.webhook_id for x in delivered)
            assert len(ids) == sent and set(ids.values()) == {1}, ids
            for x in got:
                rx.verify(x, hook["secret"])
            # ordered per session on every endpoint
            for sess in range(4):
                ns = [x.json()["data"]["n"] for x in delivered if x.json()["data"]["n"] % 4 == sess]
                assert ns == sorted(ns), (path, ns)


async def test_unusable_callback_secret_fails_the_delivery(hooks_server: Running) -> None:
    srv = hooks_server
    t = await new_tenant(srv)
    async with srv.state.db.session() as s:
        await record_callback(
            s,
            tenant_id=t["tenantId"],
            session_id=None,
            url="http://127.0.0.1:9/never",
            secret="whsec_not base64!",
            event="document.ready",
            data={"docId": "doc_2"},
        )
        await s.commit()
    for _ in range(100):
        async with srv.state.db.session() as s:
            row = (
                await s.exec(
                    select(WebhookDelivery).where(
                        col(WebhookDelivery.url) == "http://127.0.0.1:9/never"
                    )
                )
            ).one()
        if row.status == "failed":
            break
        await asyncio.sleep(0.05)
    assert (row.status, row.last_error) == ("failed", "the secret is not a valid whsec_ secret")


async def test_old_finished_deliveries_and_events_are_pruned(hooks_server: Running) -> None:
    srv = hooks_server
    t = await new_tenant(srv)
    async with WebhookReceiver() as rx, srv.client() as c:
        hook = await register(c, t["apiKey"], rx.url(), ["session.ended"])
        await record(srv, t["tenantId"], "session.ended", None, {"sessionId": "x"})
        await rx.wait_for(1)
        await settled(c, t["apiKey"], hook["id"], 1)
        await srv.state.repo.prune_webhooks(before=time.time() + 1)
        assert await deliveries(c, t["apiKey"], hook["id"]) == []
        r = await c.get("/api/triggers/session-ended", headers={"x-tenant-key": t["apiKey"]})
        assert r.json() == []


# -- management ------------------------------------------------------------------------------


async def test_manage_endpoints(hooks_server: Running, receiver: WebhookReceiver) -> None:
    srv = hooks_server
    t = await new_tenant(srv)
    other = await new_tenant(srv)
    key = {"x-tenant-key": t["apiKey"]}
    async with srv.client() as c:
        for bad in (
            {"url": receiver.url(), "events": []},
            {"url": receiver.url(), "events": ["session.started"]},
            {"url": "ftp://example.com/x", "events": ["session.ended"]},
            {"url": receiver.url()},
            {"events": ["session.ended"]},
        ):
            r = await c.post("/api/webhooks", json=bad, headers=key)
            assert r.status_code == 400, (bad, r.text)
        assert (await c.post("/api/webhooks", json={})).status_code == 401
        hook = await register(c, t["apiKey"], receiver.url(), ["job.finished", "job.finished"])
        assert hook["events"] == ["job.finished"]
        r = await c.get("/api/webhooks", headers={"authorization": f"Bearer {t['apiKey']}"})
        [listed] = r.json()["webhooks"]
        assert listed["id"] == hook["id"] and "secret" not in listed
        r = await c.get(f"/api/webhooks/{hook['id']}", headers=key)
        assert r.json()["url"] == receiver.url() and "secret" not in r.json()
        # another tenant's endpoint is not found, whatever is done with it
        okey = {"x-tenant-key": other["apiKey"]}
        for method, path in (
            ("GET", ""),
            ("DELETE", ""),
            ("POST", "/rotate-secret"),
            ("GET", "/deliveries"),
        ):
            r = await c.request(method, f"/api/webhooks/{hook['id']}{path}", headers=okey)
            error_of(r, 404, "WEBHOOK_NOT_FOUND")
        assert (await c.get("/api/webhooks", headers=okey)).json() == {"webhooks": []}

        # rotate: the old secret signs nothing from then on
        r = await c.post(f"/api/webhooks/{hook['id']}/rotate-secret", headers=key)
        assert r.status_code == 200
        fresh = r.json()["secret"]
        assert fresh != hook["secret"] and fresh.startswith("whsec_")
        await record(srv, t["tenantId"], "job.finished", None, {"jobId": "job_x"})
        [got] = await receiver.wait_for(1)
        assert receiver.verify(got, fresh)["data"] == {"jobId": "job_x"}
        with pytest.raises(WebhookVerificationError):
            receiver.verify(got, hook["secret"])

        # 410 Gone: the endpoint is disabled
        receiver.respond_with(410)
        await record(srv, t["tenantId"], "job.finished", None, {"jobId": "job_y"})
        for _ in range(100):
            r = await c.get(f"/api/webhooks/{hook['id']}", headers=key)
            if r.json()["disabled"]:
                break
            await asyncio.sleep(0.05)
        assert r.json()["disabled"] is True

        r = await c.delete(f"/api/webhooks/{hook['id']}", headers=key)
        assert r.status_code == 204
        error_of(await c.get(f"/api/webhooks/{hook['id']}", headers=key), 404)


async def test_private_addresses_are_refused(sqlite_url: str) -> None:
    async with run_server(make_settings(sqlite_url)) as srv:
        t = await new_tenant(srv)
        key = {"x-tenant-key": t["apiKey"]}
        async with srv.client() as c:
            for url in (
                "http://127.0.0.1:9/hook",
                "http://localhost/hook",
                "http://10.1.2.3/",
                "http://169.254.169.254/latest/meta-data",
                "http://[::1]/",
                "http://[::ffff:192.168.0.1]/",
                "https://0.0.0.0/",
                "http://224.0.0.1/",
            ):
                r = await c.post(
                    "/api/webhooks", json={"url": url, "events": ["session.ended"]}, headers=key
                )
                err = error_of(r, 400, "URL_NOT_ALLOWED")
                assert "MCUSTT_ALLOW_PRIVATE_URLS" in err["message"], err
            r = await c.post(
                "/api/webhooks",
                json={"url": "http://user:pw@example.com/", "events": ["session.ended"]},
                headers=key,
            )
            error_of(r, 400, "URL_NOT_ALLOWED")
            assert (await c.get("/api/webhooks", headers=key)).json() == {"webhooks": []}


# -- units -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "not globally routable"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:8.8.8.8", None),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_classes(address: str, why: str | None) -> None:
    assert netguard.refusal(ipaddress.ip_address(address)) == why


async def test_pinned_request_keeps_the_name() -> None:
    checked = netguard.CheckedUrl(
        "https://hooks.example.com:8443/a?b=1",
        *netguard._parse("https://hooks.example.com:8443/a?b=1"),
        address="93.184.216.34",
    )
    async with httpx.AsyncClient() as client:
        req = netguard.pinned_request(
            client, checked, method="POST", headers={"x-a": "1"}, content=b"{}"
        )
    assert str(req.url) == "https://93.184.216.34:8443/a?b=1"
    assert req.headers["host"] == "hooks.example.com:8443"
    assert req.extensions["sni_hostname"] == "hooks.example.com"


def test_retry_schedule_spans_a_day() -> None:
    delays = [retry_delay(n, 5.0) for n in range(1, MAX_ATTEMPTS)]
    assert delays[:3] == [5.0, 30.0, 120.0] and max(delays) == 5.0 * RETRY_STEPS[-1]
    assert sum(delays) > 24 * 3600
    assert json.dumps(delays)  # plain numbers
