"""Webhook rows: endpoints, the event outbox, and deliveries claimed under a lease.

**Recording.** :func:`record_event` and :func:`record_callback` add rows inside the
caller's open transaction (the caller commits): an event is stored if and only if the
change it reports is, so none is lost to a crash between the two. ``record_event`` fans
the event out at once to the tenant's endpoints subscribed to its type (one delivery
row each); an endpoint registered later does not receive earlier events.

**Claiming** mirrors :mod:`mcustt.store.jobs`: a conditional UPDATE takes one due
delivery (pending and due, or delivering with an expired lease) for a worker and a
lease; every later write is fenced on ``lease_owner``. Two more conditions make a
delivery eligible, checked in the same UPDATE:

* *at most one in flight per endpoint*: no other delivery of its endpoint is
  ``delivering`` under a live lease;
* *ordered per session*: no earlier delivery (lower ``seq``) of the same endpoint and
  session is still pending or delivering.

For an endpoint's delivery the claim first takes the endpoint's row lock (a no-op
UPDATE, as :func:`mcustt.store.sessions._lock_tenant` does for tenants), so two nodes
claiming two deliveries of one endpoint at once are serialized and the second one's
UPDATE sees the first one's claim (PostgreSQL's READ COMMITTED takes a fresh snapshot
per statement; SQLite serializes writers anyway).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import delete, exists, func, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mcustt import wire
from mcustt.store.db import Database
from mcustt.store.models import (
    Session,
    Summary,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from mcustt.tokens import random_id
from mcustt.wire import WebhookDeliveryStatus

#: How many deliveries the claim looks at per round (the others wait for the next).
_CANDIDATES = 20


def iso(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds (the triggers' and payloads' times)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary_markdown(content: Mapping[str, Any]) -> str:
    """A summary's content as Markdown (``summary.ready``'s ``markdownBody``)."""
    out = ["## Summary", "", str(content.get("tldr") or "").strip() or "(empty)"]
    decisions = [str(d) for d in content.get("decisions") or []]
    if decisions:
        out += ["", "## Decisions", ""] + [f"- {d}" for d in decisions]
    items = list(content.get("actionItems") or [])
    if items:
        out += ["", "## Action items", ""]
        for item in items:
            owner = item.get("owner") if isinstance(item, Mapping) else None
            task = item.get("task") if isinstance(item, Mapping) else item
            out.append(f"- **{owner}**: {task}" if owner else f"- {task}")
    qa = [str(q) for q in content.get("qa") or []]
    if qa:
        out += ["", "## Questions and answers", ""] + [f"- {q}" for q in qa]
    return "\n".join(out) + "\n"


def session_ended_data(session: Session, line_count: int) -> wire.WebhookSessionEndedData:
    ended = session.ended_at or session.updated_at
    return {
        "sessionId": session.id,
        "title": session.title,
        "language": session.detected_lang or session.source_lang,
        "startAt": iso(session.created_at),
        "endAt": iso(ended),
        "endReason": session.end_reason,
        "audioMs": session.audio_ms,
        "lineCount": line_count,
    }


def summary_ready_data(session: Session, summary: Summary) -> wire.WebhookSummaryReadyData:
    content = dict(summary.content or {})
    return {
        "sessionId": session.id,
        "sessionTitle": session.title,
        "model": summary.model or "",
        "lang": summary.lang or session.source_lang,
        "markdownBody": summary_markdown(content),
        # The JSON column holds exactly the wire's SummaryContent (save_summary's input).
        "summary": cast("wire.SummaryContent", content),
        "fromSeq": summary.from_seq,
        "toSeq": summary.to_seq,
        "createdAt": iso(summary.updated_at),
    }


def new_event_id() -> str:
    return "evt_" + random_id(24)


def new_delivery_id() -> str:
    return "dlv_" + random_id(24)


async def record_event(
    s: AsyncSession,
    *,
    tenant_id: str,
    event: str,
    session_id: str | None,
    data: Mapping[str, Any],
) -> None:
    """Add ``event`` to the outbox, with a pending delivery for each of the tenant's
    enabled endpoints subscribed to it, in the caller's transaction (it commits)."""
    now = time.time()
    row = WebhookEvent(
        id=new_event_id(),
        tenant_id=tenant_id,
        type=event,
        session_id=session_id,
        data=dict(data),
        created_at=now,
    )
    s.add(row)
    endpoints = (
        await s.exec(
            select(WebhookEndpoint).where(
                col(WebhookEndpoint.tenant_id) == tenant_id,
                col(WebhookEndpoint.disabled).is_(False),
            )
        )
    ).all()
    targets = [e for e in endpoints if event in e.events]
    if not targets:
        return
    await s.flush()  # the event row first: the deliveries reference it
    for endpoint in targets:
        s.add(
            WebhookDelivery(
                id=new_delivery_id(),
                tenant_id=tenant_id,
                event_id=row.id,
                endpoint_id=endpoint.id,
                session_id=session_id,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )


async def record_callback(
    s: AsyncSession,
    *,
    tenant_id: str,
    session_id: str | None,
    url: str,
    secret: str,
    event: str,
    data: Mapping[str, Any],
) -> None:
    """Queue one signed POST of ``event`` to ``url`` (a caller-given callback, signed
    with ``secret``, a ``whsec_`` secret), in the caller's transaction (it commits).

    The URL should have passed :func:`mcustt.netguard.check_url` when the caller
    accepted it; the delivery checks it again before every attempt. Not fanned out to
    endpoints and not listed by the triggers."""
    now = time.time()
    row = WebhookEvent(
        id=new_event_id(),
        tenant_id=tenant_id,
        type=event,
        session_id=session_id,
        data=dict(data),
        callback_only=True,
        created_at=now,
    )
    s.add(row)
    await s.flush()  # the event row first: the delivery references it
    s.add(
        WebhookDelivery(
            id=new_delivery_id(),
            tenant_id=tenant_id,
            event_id=row.id,
            url=url,
            secret=secret,
            session_id=session_id,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
    )


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a worker holds, with what it sends and where."""

    delivery: WebhookDelivery
    event: WebhookEvent
    url: str
    secret: str
    owner: str


@dataclass(frozen=True)
class DeliveryRow:
    """A delivery with its event's type (the delivery log)."""

    delivery: WebhookDelivery
    event_type: str


def _eligible(now: float) -> Any:
    """Due, and neither blocked by an in-flight delivery of the endpoint nor by an
    earlier unfinished one of the same endpoint and session (see the module doc)."""
    d = WebhookDelivery
    other = aliased(WebhookDelivery)
    due = or_(
        (col(d.status) == "pending") & (col(d.next_attempt_at) <= now),
        (col(d.status) == "delivering") & (col(d.lease_until) < now),
    )
    busy = exists().where(
        col(other.endpoint_id) == col(d.endpoint_id),
        col(other.status) == "delivering",
        col(other.lease_until) >= now,
        col(other.seq) != col(d.seq),
    )
    earlier = exists().where(
        col(other.endpoint_id) == col(d.endpoint_id),
        col(other.session_id) == col(d.session_id),
        col(other.seq) < col(d.seq),
        col(other.status).in_(("pending", "delivering")),
    )
    return due & ~busy & ~earlier


async def _lock_endpoint(s: AsyncSession, endpoint_id: str) -> None:
    """The endpoint's row lock until the transaction ends (a no-op write: the row lock
    on PostgreSQL, the write lock on SQLite)."""
    await s.exec(
        update(WebhookEndpoint)
        .where(col(WebhookEndpoint.id) == endpoint_id)
        .values(updated_at=WebhookEndpoint.updated_at)
    )


class WebhookQueries:
    db: Database

    # -- endpoints -------------------------------------------------------------------------

    async def insert_webhook(self, endpoint: WebhookEndpoint) -> None:
        async with self.db.session() as s:
            s.add(endpoint)
            await s.commit()

    async def count_webhooks(self, tenant_id: str) -> int:
        async with self.db.session() as s:
            n = await s.scalar(
                select(func.count())
                .select_from(WebhookEndpoint)
                .where(col(WebhookEndpoint.tenant_id) == tenant_id)
            )
            return int(n or 0)

    async def list_webhooks(self, tenant_id: str, *, limit: int = 100) -> list[WebhookEndpoint]:
        async with self.db.session() as s:
            rows = await s.exec(
                select(WebhookEndpoint)
                .where(col(WebhookEndpoint.tenant_id) == tenant_id)
                .order_by(col(WebhookEndpoint.created_at).desc())
                .limit(limit)
            )
            return list(rows.all())

    async def get_webhook(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        """The tenant's endpoint (None when missing or another tenant's)."""
        async with self.db.session() as s:
            endpoint = await s.get(WebhookEndpoint, endpoint_id)
        if endpoint is None or endpoint.tenant_id != tenant_id:
            return None
        return endpoint

    async def delete_webhook(self, tenant_id: str, endpoint_id: str) -> bool:
        """Delete the endpoint and its delivery log (an attempt in flight finishes, and
        its outcome is dropped)."""
        async with self.db.session() as s:
            # The endpoint's row lock first, as a claim takes it: the same lock order
            # (endpoint, then deliveries) cannot deadlock with a claim.
            await _lock_endpoint(s, endpoint_id)
            endpoint = await s.get(WebhookEndpoint, endpoint_id)
            if endpoint is None or endpoint.tenant_id != tenant_id:
                return False
            await s.exec(
                delete(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint_id)
            )
            await s.delete(endpoint)
            await s.commit()
        return True

    async def rotate_webhook_secret(
        self, tenant_id: str, endpoint_id: str, secret: str
    ) -> WebhookEndpoint | None:
        async with self.db.session() as s:
            endpoint = await s.get(WebhookEndpoint, endpoint_id)
            if endpoint is None or endpoint.tenant_id != tenant_id:
                return None
            endpoint.secret = secret
            endpoint.updated_at = time.time()
            s.add(endpoint)
            await s.commit()
            return endpoint

    async def disable_webhook(self, endpoint_id: str, reason: str) -> None:
        """Stop sending to the endpoint (it answered 410 Gone): its waiting deliveries
        fail with ``reason``."""
        now = time.time()
        async with self.db.session() as s:
            await s.exec(
                update(WebhookEndpoint)
                .where(col(WebhookEndpoint.id) == endpoint_id)
                .values(disabled=True, updated_at=now)
            )
            await s.exec(
                update(WebhookDelivery)
                .where(
                    col(WebhookDelivery.endpoint_id) == endpoint_id,
                    col(WebhookDelivery.status) == "pending",
                )
                .values(status="failed", last_error=reason, updated_at=now)
            )
            await s.commit()

    # -- the delivery log ------------------------------------------------------------------

    async def list_deliveries(self, endpoint_id: str, *, limit: int) -> list[DeliveryRow]:
        """The endpoint's deliveries, newest first."""
        async with self.db.session() as s:
            rows = await s.exec(
                select(WebhookDelivery, WebhookEvent.type)
                .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
                .where(col(WebhookDelivery.endpoint_id) == endpoint_id)
                .order_by(col(WebhookDelivery.seq).desc())
                .limit(limit)
            )
            return [DeliveryRow(d, t) for d, t in rows.all()]

    async def get_delivery(self, delivery_id: str) -> DeliveryRow | None:
        async with self.db.session() as s:
            row = (
                await s.exec(
                    select(WebhookDelivery, WebhookEvent.type)
                    .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
                    .where(col(WebhookDelivery.id) == delivery_id)
                )
            ).first()
        return None if row is None else DeliveryRow(row[0], row[1])

    async def requeue_delivery(self, endpoint_id: str, delivery_id: str) -> bool:
        """Send the delivery again from its first attempt (same event, same
        ``webhook-id``), unless an attempt of it is in flight."""
        now = time.time()
        async with self.db.session() as s:
            result = await s.exec(
                update(WebhookDelivery)
                .where(
                    col(WebhookDelivery.id) == delivery_id,
                    col(WebhookDelivery.endpoint_id) == endpoint_id,
                    or_(
                        col(WebhookDelivery.status) != "delivering",
                        col(WebhookDelivery.lease_until) < now,
                    ),
                )
                .values(
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=now,
                )
            )
            await s.commit()
            return bool(result.rowcount == 1)

    # -- claim and complete ----------------------------------------------------------------

    async def claim_delivery(self, owner: str, *, lease_s: float) -> ClaimedDelivery | None:
        """Take one eligible delivery for ``owner`` for ``lease_s`` (None: nothing is
        eligible now, or other workers won every candidate)."""
        now = time.time()
        d = WebhookDelivery
        async with self.db.session() as s:
            candidates = (
                await s.exec(
                    select(d.seq, d.endpoint_id)
                    .where(_eligible(now))
                    .order_by(col(d.seq))
                    .limit(_CANDIDATES)
                )
            ).all()
        seen: set[str] = set()
        for seq, endpoint_id in candidates:
            if endpoint_id is not None:
                if endpoint_id in seen:
                    continue  # one per endpoint and round: the next would be blocked
                seen.add(endpoint_id)
            claimed = await self._claim_one(seq, endpoint_id, owner, lease_s=lease_s)
            if claimed is not None:
                return claimed
        return None

    async def _claim_one(
        self, seq: int | None, endpoint_id: str | None, owner: str, *, lease_s: float
    ) -> ClaimedDelivery | None:
        d = WebhookDelivery
        async with self.db.session() as s:
            if endpoint_id is not None:
                await _lock_endpoint(s, endpoint_id)
            now = time.time()
            result = await s.exec(
                update(d)
                .where(col(d.seq) == seq, _eligible(now))
                .values(
                    status="delivering",
                    lease_owner=owner,
                    lease_until=now + lease_s,
                    attempts=d.attempts + 1,
                    updated_at=now,
                )
            )
            await s.commit()
            if result.rowcount != 1:
                return None
            delivery = await s.get(d, seq, populate_existing=True)
            if delivery is None:
                return None
            event = await s.get(WebhookEvent, delivery.event_id)
            endpoint = (
                await s.get(WebhookEndpoint, endpoint_id) if endpoint_id is not None else None
            )
        if event is None:
            return None
        if endpoint is not None:
            url, secret = endpoint.url, endpoint.secret
        elif delivery.url is not None and delivery.secret is not None:
            url, secret = delivery.url, delivery.secret
        else:
            return None  # the endpoint went away between the claim and the read
        return ClaimedDelivery(delivery, event, url, secret, owner)

    async def finish_delivery(
        self,
        seq: int,
        owner: str,
        *,
        status: WebhookDeliveryStatus,
        last_status: int | None,
        last_error: str | None,
        next_attempt_at: float | None = None,
    ) -> bool:
        """Record an attempt's outcome, if ``owner`` still holds the lease."""
        now = time.time()
        values: dict[str, Any] = {
            "status": status,
            "last_status": last_status,
            "last_error": last_error[:500] if last_error else None,
            "lease_owner": None,
            "lease_until": None,
            "updated_at": now,
        }
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        if status == "delivered":
            values["delivered_at"] = now
        async with self.db.session() as s:
            result = await s.exec(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.seq) == seq, col(WebhookDelivery.lease_owner) == owner)
                .values(**values)
            )
            await s.commit()
            return bool(result.rowcount == 1)

    async def prune_webhooks(self, *, before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` finished deliveries last touched before ``before``,
        then events older than it that no delivery refers to any more; how many rows
        went."""
        d = WebhookDelivery
        async with self.db.session() as s:
            seqs = (
                await s.exec(
                    select(d.seq)
                    .where(
                        col(d.status).in_(("delivered", "failed")),
                        col(d.updated_at) < before,
                    )
                    .limit(limit)
                )
            ).all()
            if seqs:
                await s.exec(delete(d).where(col(d.seq).in_(list(seqs))))
            ids = (
                await s.exec(
                    select(WebhookEvent.id)
                    .where(
                        col(WebhookEvent.created_at) < before,
                        ~exists().where(col(d.event_id) == col(WebhookEvent.id)),
                    )
                    .limit(limit)
                )
            ).all()
            if ids:
                await s.exec(delete(WebhookEvent).where(col(WebhookEvent.id).in_(list(ids))))
            await s.commit()
        return len(seqs) + len(ids)

    # -- the polling triggers --------------------------------------------------------------

    async def recent_events(self, tenant_id: str, event: str, *, limit: int) -> list[WebhookEvent]:
        """The tenant's latest events of one type, newest first (callbacks excluded)."""
        async with self.db.session() as s:
            rows = await s.exec(
                select(WebhookEvent)
                .where(
                    col(WebhookEvent.tenant_id) == tenant_id,
                    col(WebhookEvent.type) == event,
                    col(WebhookEvent.callback_only).is_(False),
                )
                .order_by(col(WebhookEvent.created_at).desc())
                .limit(limit)
            )
            return list(rows.all())
