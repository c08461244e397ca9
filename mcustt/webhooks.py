"""Webhooks: endpoints, their signed delivery, and the polling triggers (issue 16).

Events are recorded by the store in the transaction of the change they report
(:func:`mcustt.store.webhooks.record_event`, ``record_callback``); this service delivers
them. Its workers mirror the job runner's claim/lease pattern rather than running as
jobs (:mod:`mcustt.store.webhooks` has the queries): a delivery row is claimed under a
lease by one worker of any node, at most one per endpoint at a time and in order per
session, POSTed once, and its outcome written fenced on the lease owner. A worker that
dies mid-attempt leaves the lease to expire; the attempt is then made again (by any
node) with the same ``webhook-id``, which receivers deduplicate on.

**Signing** follows Standard Webhooks (the ``standardwebhooks`` package signs):
``webhook-id`` (the event id, the same on every attempt), ``webhook-timestamp`` (the
attempt's unix time) and ``webhook-signature`` ``v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`` keyed with the endpoint's ``whsec_`` secret decoded.

**Retries**: 2xx is delivered; anything else (3xx included: redirects are not
followed, their target would be unchecked by the address guard; timeouts, refused
connections, a URL the guard now refuses) is retried after :data:`RETRY_STEPS` times
``MCUSTT_WEBHOOK_RETRY_BASE_S`` (5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h,
8 h…), :data:`MAX_ATTEMPTS` attempts in all, the last one more than 24 h after the first.
410 Gone disables the endpoint (its waiting deliveries fail).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from standardwebhooks import Webhook

from mcustt import logs, netguard, wire
from mcustt.errors import Conflict, MCUSTTError, NotFound
from mcustt.outages import log_failure
from mcustt.store.models import WebhookEndpoint
from mcustt.store.repo import Repo
from mcustt.store.webhooks import ClaimedDelivery, DeliveryRow, iso, summary_markdown
from mcustt.tokens import random_id
from mcustt.wire import ErrorCode

log = structlog.get_logger(__name__)

#: Retry delays in units of the base delay (base 5 s: 5 s, 30 s, 2 min … 8 h, then 8 h).
RETRY_STEPS = (1, 6, 24, 120, 360, 720, 1440, 2880, 5760)
#: Attempts before a delivery fails for good (with base 5 s: the last ~31.7 h after the
#: first, so every delivery is tried for more than 24 h).
MAX_ATTEMPTS = 12
#: Deliveries listed per endpoint (newest first).
DELIVERY_LOG_LIMIT = 100
#: Items of a polling trigger (newest first), as the neighbour product's.
TRIGGER_LIMIT = 50
USER_AGENT = "mcustt-webhooks/1"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes, base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def retry_delay(attempts: int, base_s: float) -> float:
    """The wait after the ``attempts``-th failed attempt."""
    step = RETRY_STEPS[min(max(attempts, 1), len(RETRY_STEPS)) - 1]
    return base_s * step


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header value."""
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body)


def endpoint_json(endpoint: WebhookEndpoint) -> wire.WebhookEndpoint:
    """An endpoint as listed (never its secret)."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": [e for e in endpoint.events if e in wire.WEBHOOK_EVENTS],
        "disabled": endpoint.disabled,
        "createdAt": endpoint.created_at,
        "updatedAt": endpoint.updated_at,
    }


def delivery_json(row: DeliveryRow) -> wire.WebhookDeliveryInfo:
    d = row.delivery
    return {
        "id": d.id,
        "eventId": d.event_id,
        "type": row.event_type,
        "sessionId": d.session_id,
        "status": d.status,
        "attempts": d.attempts,
        "lastStatus": d.last_status,
        "lastError": d.last_error,
        "nextAttemptAt": d.next_attempt_at if d.status == "pending" else None,
        "createdAt": d.created_at,
        "updatedAt": d.updated_at,
        "deliveredAt": d.delivered_at,
    }


class WebhookService:
    """Endpoint management, the triggers, and this node's delivery workers.

    Args:
        repo: the store.
        allow_private: let URLs reach non-public addresses (the address guard).
        timeout_s: one attempt's timeout.
        retry_base_s: the first retry's delay (see :data:`RETRY_STEPS`).
        workers: delivery workers of this node (0: it delivers nothing).
        poll_s: how often an idle worker looks for due deliveries.
        max_endpoints: endpoints per tenant.
        node_id: prefixes lease owners.
        retention_days: finished deliveries and their events (so the triggers' items
            too) are deleted after this many days.
        prune_interval_s: how often this node prunes them.
    """

    def __init__(
        self,
        repo: Repo,
        *,
        allow_private: bool,
        timeout_s: float,
        retry_base_s: float,
        workers: int,
        poll_s: float,
        max_endpoints: int,
        node_id: str,
        retention_days: int = 30,
        prune_interval_s: float = 3600.0,
    ) -> None:
        self.repo = repo
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.retry_base_s = retry_base_s
        self.workers = workers
        self.poll_s = poll_s
        self.max_endpoints = max_endpoints
        self.node_id = node_id
        self.retention_days = retention_days
        self.prune_interval_s = prune_interval_s
        # An attempt takes at most timeout_s (plus resolving): the lease outlives it.
        self.lease_s = 2 * timeout_s + netguard.RESOLVE_TIMEOUT_S + 30.0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # No proxies from the environment (they would bypass the pinned address), no
        # redirects (their target would be unchecked), bounded connections.
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max(4, 2 * workers), max_keepalive_connections=0),
        )

    def start(self) -> None:
        for i in range(self.workers):
            self._tasks.append(asyncio.create_task(self._loop(), name=f"webhooks-{i}"))
        self._tasks.append(asyncio.create_task(self._prune_loop(), name="webhooks-prune"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._client.aclose()

    def wake(self) -> None:
        """Look for due deliveries now (something was recorded on this node)."""
        self._wake.set()

    # -- endpoints ---------------------------------------------------------------------

    async def check_url(self, url: str) -> netguard.CheckedUrl:
        return await netguard.check_url(url, allow_private=self.allow_private)

    async def create(
        self, tenant_id: str, url: str, events: list[str]
    ) -> tuple[WebhookEndpoint, str]:
        """Register an endpoint; returns it and its secret (shown to the caller once)."""
        await self.check_url(url)
        if await self.repo.count_webhooks(tenant_id) >= self.max_endpoints:
            raise Conflict(
                f"this tenant already has {self.max_endpoints} webhook endpoints "
                "(the most allowed); delete one first"
            )
        now = time.time()
        secret = new_secret()
        endpoint = WebhookEndpoint(
            id="wh_" + random_id(20),
            tenant_id=tenant_id,
            url=url,
            events=list(dict.fromkeys(events)),
            secret=secret,
            created_at=now,
            updated_at=now,
        )
        await self.repo.insert_webhook(endpoint)
        log.info("webhook endpoint created", webhook_id=endpoint.id, events=endpoint.events)
        return endpoint, secret

    async def get(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
        endpoint = await self.repo.get_webhook(tenant_id, endpoint_id)
        if endpoint is None:
            raise NotFound("no such webhook endpoint", code=ErrorCode.WEBHOOK_NOT_FOUND)
        return endpoint

    async def list_endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        return await self.repo.list_webhooks(tenant_id, limit=self.max_endpoints)

    async def delete(self, tenant_id: str, endpoint_id: str) -> None:
        if not await self.repo.delete_webhook(tenant_id, endpoint_id):
            raise NotFound("no such webhook endpoint", code=ErrorCode.WEBHOOK_NOT_FOUND)
        log.info("webhook endpoint deleted", webhook_id=endpoint_id)

    async def rotate_secret(self, tenant_id: str, endpoint_id: str) -> tuple[WebhookEndpoint, str]:
        """A new secret; the old one signs nothing from now on (no grace period)."""
        secret = new_secret()
        endpoint = await self.repo.rotate_webhook_secret(tenant_id, endpoint_id, secret)
        if endpoint is None:
            raise NotFound("no such webhook endpoint", code=ErrorCode.WEBHOOK_NOT_FOUND)
        log.info("webhook secret rotated", webhook_id=endpoint_id)
        return endpoint, secret

    async def deliveries(self, tenant_id: str, endpoint_id: str) -> list[DeliveryRow]:
        await self.get(tenant_id, endpoint_id)
        return await self.repo.list_deliveries(endpoint_id, limit=DELIVERY_LOG_LIMIT)

    async def redeliver(self, tenant_id: str, endpoint_id: str, delivery_id: str) -> DeliveryRow:
        """Queue the delivery again (same event, same ``webhook-id``)."""
        await self.get(tenant_id, endpoint_id)
        row = await self.repo.get_delivery(delivery_id)
        if row is None or row.delivery.endpoint_id != endpoint_id:
            raise NotFound("no such delivery", code=ErrorCode.DELIVERY_NOT_FOUND)
        if not await self.repo.requeue_delivery(endpoint_id, delivery_id):
            raise Conflict("an attempt of this delivery is in flight; try again shortly")
        self.wake()
        fresh = await self.repo.get_delivery(delivery_id)
        if fresh is None:  # the endpoint was deleted meanwhile
            raise NotFound("no such delivery", code=ErrorCode.DELIVERY_NOT_FOUND)
        return fresh

    # -- the polling triggers ------------------------------------------------------------

    async def sessions_ended(self, tenant_id: str) -> list[wire.TriggerSessionEnded]:
        events = await self.repo.recent_events(tenant_id, "session.ended", limit=TRIGGER_LIMIT)
        items: list[wire.TriggerSessionEnded] = []
        for e in events:
            d = e.data
            items.append(
                {
                    "id": e.id,
                    "sessionId": str(d.get("sessionId") or e.session_id or ""),
                    "title": d.get("title"),
                    "startAt": str(d.get("startAt") or iso(e.created_at)),
                    "endAt": str(d.get("endAt") or iso(e.created_at)),
                    "language": str(d.get("language") or ""),
                    "endReason": d.get("endReason"),
                    "audioMs": int(d.get("audioMs") or 0),
                    "lineCount": int(d.get("lineCount") or 0),
                }
            )
        return items

    async def summaries_ready(self, tenant_id: str) -> list[wire.TriggerSummaryReady]:
        events = await self.repo.recent_events(tenant_id, "summary.ready", limit=TRIGGER_LIMIT)
        items: list[wire.TriggerSummaryReady] = []
        for e in events:
            d = e.data
            summary = d.get("summary")
            markdown = d.get("markdownBody")
            if not isinstance(markdown, str):
                markdown = summary_markdown(summary if isinstance(summary, dict) else {})
            items.append(
                {
                    "id": e.id,
                    "sessionId": str(d.get("sessionId") or e.session_id or ""),
                    "sessionTitle": d.get("sessionTitle"),
                    "model": str(d.get("model") or ""),
                    "markdownBody": markdown,
                    "createdAt": str(d.get("createdAt") or iso(e.created_at)),
                }
            )
        return items

    # -- delivery ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                claimed = await self.repo.claim_delivery(
                    f"{self.node_id}:{random_id(6)}", lease_s=self.lease_s
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, "webhook claim failed", exc)
                claimed = None
            if claimed is None:
                self._wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose the
                # shutdown's cancel when the wake-up lands at the same moment.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_s):
                        await self._wake.wait()
                continue
            try:
                await self.deliver(claimed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Recording the outcome failed (the database went away): the lease
                # expires and the delivery is attempted again; this worker lives on.
                log_failure(log, "webhook bookkeeping failed", exc, delivery_id=claimed.delivery.id)

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.prune_interval_s)
            try:
                before = time.time() - self.retention_days * 86400
                for _ in range(100):  # batches of 1000 rows; the rest next time
                    if await self.repo.prune_webhooks(before=before) == 0:
                        break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, "webhook pruning failed", exc)

    def body(self, claimed: ClaimedDelivery) -> str:
        """What is POSTed: an endpoint gets the Standard Webhooks envelope; a callback
        gets the caller's ``data`` itself."""
        event = claimed.event
        doc: Any
        if claimed.delivery.endpoint_id is None:
            doc = event.data
        else:
            payload: wire.WebhookPayload = {
                "type": event.type,  # type: ignore[typeddict-item]  # a recorded name
                "timestamp": iso(event.created_at),
                "data": event.data,
            }
            doc = payload
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)

    async def deliver(self, claimed: ClaimedDelivery) -> None:
        """One attempt of a claimed delivery, and its outcome recorded."""
        d = claimed.delivery
        bound = log.bind(
            delivery_id=d.id, event_id=d.event_id, webhook_id=d.endpoint_id, attempt=d.attempts
        )
        status: int | None = None
        error: str | None = None
        if d.attempts > MAX_ATTEMPTS:  # its workers kept dying mid-attempt: give up
            await self.repo.finish_delivery(
                d.seq or 0,
                claimed.owner,
                status="failed",
                last_status=None,
                last_error=d.last_error or "too many attempts",
            )
            return
        try:
            body = self.body(claimed)
            ts = int(time.time())
            signature = sign(claimed.secret, claimed.event.id, ts, body)
        except ValueError:  # a callback secret that is not base64: it can never be signed
            await self.repo.finish_delivery(
                d.seq or 0,
                claimed.owner,
                status="failed",
                last_status=None,
                last_error="the secret is not a valid whsec_ secret",
            )
            bound.warning("webhook secret unusable: delivery failed")
            return
        try:
            checked = await self.check_url(claimed.url)
            headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "webhook-id": claimed.event.id,
                "webhook-timestamp": str(ts),
                "webhook-signature": signature,
            }
            request = netguard.pinned_request(
                self._client, checked, method="POST", headers=headers, content=body.encode()
            )
            async with asyncio.timeout(self.timeout_s + 1):
                response = await self._client.send(request, stream=True)
                await response.aclose()  # the answer's body is not read: only its status
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (" (redirects are not followed)" if status < 400 else "")
        except MCUSTTError as exc:  # the address guard
            error = exc.message
        except (TimeoutError, httpx.TimeoutException):
            error = f"timed out after {self.timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {logs.scrub(str(exc))}"[:500]
        if error is None:
            await self.repo.finish_delivery(
                d.seq or 0, claimed.owner, status="delivered", last_status=status, last_error=None
            )
            bound.info("webhook delivered", status=status)
            return
        if status == 410 and d.endpoint_id is not None:
            await self.repo.finish_delivery(
                d.seq or 0, claimed.owner, status="failed", last_status=status, last_error=error
            )
            await self.repo.disable_webhook(d.endpoint_id, "the endpoint answered 410 Gone")
            bound.warning("webhook endpoint gone: disabled")
            return
        final = d.attempts >= MAX_ATTEMPTS
        retry_at = time.time() + retry_delay(d.attempts, self.retry_base_s)
        await self.repo.finish_delivery(
            d.seq or 0,
            claimed.owner,
            status="failed" if final else "pending",
            last_status=status,
            last_error=error,
            next_attempt_at=None if final else retry_at,
        )
        bound.warning("webhook attempt failed", status=status, error=error, final=final)
