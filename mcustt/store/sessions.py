"""Session rows: the capped insert, the single producer claim, ending, housekeeping.

Capped writes take the tenant's row lock first (:func:`_lock_tenant`), then count, then
write, all in one transaction: without the lock, 10 simultaneous creates all passed a
cap of 3. The producer claim is ONE conditional UPDATE that burns the ingest token and
takes the lease together, so two simultaneous connects with one token admit exactly one,
on any node and on either database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mcustt.store.db import Database
from mcustt.store.models import (
    Document,
    JitsiSession,
    Job,
    LineRevision,
    ProducerTrack,
    Session,
    SpeakerName,
    Summary,
    Tenant,
    TranscriptLine,
)
from mcustt.store.nodes import node_dead
from mcustt.store.webhooks import record_event, session_ended_data


async def _lock_tenant(s: AsyncSession, tenant_id: str) -> None:
    """Serialize a tenant's capped operations (maxSessions, concurrent ingest) until the
    transaction ends: a no-op write on its row takes the row lock on PostgreSQL and the
    write lock on SQLite, so a count taken after it cannot be overtaken by a concurrent
    insert or claim."""
    await s.exec(
        update(Tenant).where(col(Tenant.id) == tenant_id).values(max_sessions=Tenant.max_sessions)
    )


async def active_producers(
    s: AsyncSession,
    tenant_id: str,
    now: float,
    *,
    session_id: str,
    participant_id: str | None,
    dead_after_s: float | None = None,
) -> int:
    """The tenant's connected producers (mixed and tracks), except the one being claimed
    (its own lingering lease must not refuse its reconnect) and, with ``dead_after_s``,
    those held by dead nodes (their producers are reconnecting elsewhere too)."""
    alive_mixed = (
        [~node_dead(Session.producer_node, now=now, dead_after_s=dead_after_s)]
        if dead_after_s is not None
        else []
    )
    mixed = await s.scalar(
        select(func.count())
        .select_from(Session)
        .where(
            Session.tenant_id == tenant_id,
            col(Session.producer_lease_until) > now,
            # a mixed claim of this session is the one being claimed
            *([Session.id != session_id] if participant_id is None else []),
            *alive_mixed,
        )
    )
    tracks_query = (
        select(func.count())
        .select_from(ProducerTrack)
        .where(ProducerTrack.tenant_id == tenant_id, col(ProducerTrack.lease_until) > now)
    )
    if dead_after_s is not None:
        tracks_query = tracks_query.where(
            ~node_dead(ProducerTrack.node_id, now=now, dead_after_s=dead_after_s)
        )
    if participant_id is not None:
        tracks_query = tracks_query.where(
            (col(ProducerTrack.session_id) != session_id)
            | (col(ProducerTrack.participant_id) != participant_id)
        )
    tracks = await s.scalar(tracks_query)
    return int(mixed or 0) + int(tracks or 0)


async def _record_session_ended(s: AsyncSession, session_id: str) -> None:
    """The ``session.ended`` webhook event, in the transaction that ends the session."""
    session = await s.get(Session, session_id, populate_existing=True)
    if session is None:
        return
    count = await s.scalar(
        select(func.count())
        .select_from(TranscriptLine)
        .where(TranscriptLine.session_id == session_id)
    )
    await record_event(
        s,
        tenant_id=session.tenant_id,
        event="session.ended",
        session_id=session_id,
        data=session_ended_data(session, int(count or 0)),
    )


@dataclass(frozen=True)
class Capped:
    """A write a per-tenant cap refused (nothing was written)."""

    #: what the cap was checked against, counted under the tenant's row lock
    count: int


@dataclass(frozen=True)
class ProducerClaim:
    """What :meth:`SessionQueries.claim_producer` did.

    ``claimed``: this caller burned the token and holds the lease (``session`` is the
    updated row). ``capped``: the tenant is at its concurrent-ingest cap (``active``
    producers on its other sessions); nothing was written. ``refused``: the conditional
    update matched nothing; ``session`` is the row as it is now (None: no such session),
    for the caller to explain why.
    """

    outcome: Literal["claimed", "capped", "refused"]
    session: Session | None
    active: int = 0
    #: claimed over an unexpired lease whose node had stopped beating (issue 13)
    took_over: str | None = None


@dataclass(frozen=True)
class SessionSnapshot:
    """Everything the session state document is built from, read in one transaction."""

    session: Session
    line_count: int
    summary: Summary | None
    tenant: Tenant | None


class SessionQueries:
    db: Database

    async def insert_session(self, session: Session, *, max_live: int) -> Capped | None:
        """Insert a live session unless its tenant already has ``max_live`` live ones."""
        async with self.db.session() as s:
            await _lock_tenant(s, session.tenant_id)
            live = await s.scalar(
                select(func.count())
                .select_from(Session)
                .where(Session.tenant_id == session.tenant_id, Session.status == "live")
            )
            if (live or 0) >= max_live:
                return Capped(int(live or 0))  # leaving without commit releases the lock
            s.add(session)
            await s.commit()
        return None

    async def get_session(self, session_id: str) -> Session | None:
        async with self.db.session() as s:
            return await s.get(Session, session_id)

    async def list_sessions(
        self, tenant_id: str, *, status: str | None = None, limit: int = 500
    ) -> list[Session]:
        """A tenant's sessions, newest first."""
        query = select(Session).where(Session.tenant_id == tenant_id)
        if status:
            query = query.where(Session.status == status)
        async with self.db.session() as s:
            rows = await s.exec(query.order_by(col(Session.created_at).desc()).limit(limit))
            return list(rows.all())

    async def set_ingest_jti(self, session_id: str, jti: str | None) -> None:
        """Name the one ingest token that may still connect (replacing any unused one)."""
        async with self.db.session() as s:
            await s.exec(
                update(Session)
                .where(col(Session.id) == session_id)
                .values(ingest_jti=jti, updated_at=time.time())
            )
            await s.commit()

    async def set_detected_lang(self, session_id: str, lang: str) -> None:
        async with self.db.session() as s:
            await s.exec(
                update(Session).where(col(Session.id) == session_id).values(detected_lang=lang)
            )
            await s.commit()

    async def set_audio_ms(self, session_id: str, audio_ms: int) -> None:
        """Grow the session's audio time to ``audio_ms`` (never shrink it: parallel
        participant tracks each report their own position)."""
        async with self.db.session() as s:
            await s.exec(
                update(Session)
                .where(col(Session.id) == session_id, col(Session.audio_ms) < audio_ms)
                .values(audio_ms=audio_ms)
            )
            await s.commit()

    async def set_caption_latency(self, session_id: str, latency: dict[str, Any]) -> None:
        """Store the session's caption latency figures (issue 17; a few-second cadence,
        never per frame), so any node's session state reports them."""
        async with self.db.session() as s:
            await s.exec(
                update(Session).where(col(Session.id) == session_id).values(caption_latency=latency)
            )
            await s.commit()

    # -- the producer claim ----------------------------------------------------------------

    async def claim_producer(
        self,
        session_id: str,
        *,
        tenant_id: str,
        jti: str | None,
        producer_id: str,
        lease_s: float,
        max_active: int,
        node_id: str | None = None,
        dead_after_s: float | None = None,
    ) -> ProducerClaim:
        """Burn the ingest token ``jti`` (when given) and take the producer lease for
        ``lease_s``, in one conditional UPDATE, unless the tenant already has
        ``max_active`` producers connected to its other sessions.

        ``node_id`` names this node in the claim; with ``dead_after_s``, a claim whose
        node's heartbeat is older than that is free too (the node died holding it)."""
        now = time.time()
        async with self.db.session() as s:
            await _lock_tenant(s, tenant_id)
            active = await active_producers(
                s,
                tenant_id,
                now,
                session_id=session_id,
                participant_id=None,
                dead_after_s=dead_after_s,
            )
            if active >= max_active:
                return ProducerClaim("capped", None, active)
            # Under the tenant's lock: who held the claim before (a takeover is counted).
            row = await s.get(Session, session_id, populate_existing=True)
            # (copied: the same identity-mapped object is refreshed after the update)
            held = (
                (row.producer_node or "?")
                if row is not None
                and row.producer_id is not None
                and (row.producer_lease_until or 0) >= now
                else None
            )
            free = (col(Session.producer_id).is_(None)) | (col(Session.producer_lease_until) < now)
            if dead_after_s is not None:
                free = free | node_dead(Session.producer_node, now=now, dead_after_s=dead_after_s)
            conds = [col(Session.id) == session_id, col(Session.status) == "live", free]
            if jti is not None:
                conds.append(col(Session.ingest_jti) == jti)
            values: dict[str, Any] = {
                "producer_id": producer_id,
                "producer_lease_until": now + lease_s,
                "producer_node": node_id,
                "updated_at": now,
            }
            if jti is not None:
                values["ingest_jti"] = None
            result = await s.exec(update(Session).where(*conds).values(**values))
            await s.commit()
            session = await s.get(Session, session_id, populate_existing=True)
        claimed = result.rowcount == 1
        return ProducerClaim(
            "claimed" if claimed else "refused", session, active, held if claimed else None
        )

    async def renew_producer(self, session_id: str, producer_id: str, *, lease_s: float) -> bool:
        """Extend the lease by ``lease_s`` from now, if this producer still holds the claim."""
        async with self.db.session() as s:
            result = await s.exec(
                update(Session)
                .where(col(Session.id) == session_id, col(Session.producer_id) == producer_id)
                .values(producer_lease_until=time.time() + lease_s)
            )
            await s.commit()
            return bool(result.rowcount == 1)

    async def release_producer(self, session_id: str, producer_id: str) -> None:
        """Give up the claim, if this producer still holds it."""
        async with self.db.session() as s:
            await s.exec(
                update(Session)
                .where(col(Session.id) == session_id, col(Session.producer_id) == producer_id)
                .values(
                    producer_id=None,
                    producer_lease_until=None,
                    producer_node=None,
                    updated_at=time.time(),
                )
            )
            await s.commit()

    # -- ending ----------------------------------------------------------------------------

    async def mark_ended(self, session_id: str, reason: str) -> bool:
        """End a live session (idempotent). True if this call ended it."""
        now = time.time()
        async with self.db.session() as s:
            result = await s.exec(
                update(Session)
                .where(col(Session.id) == session_id, col(Session.status) == "live")
                .values(
                    status="ended",
                    end_reason=reason,
                    ended_at=now,
                    updated_at=now,
                    ingest_jti=None,
                )
            )
            ended = result.rowcount == 1
            if ended:
                await _record_session_ended(s, session_id)
            await s.commit()
            return bool(ended)

    async def session_snapshot(self, session_id: str) -> SessionSnapshot | None:
        async with self.db.session() as s:
            session = await s.get(Session, session_id, populate_existing=True)
            if session is None:
                return None
            count = await s.scalar(
                select(func.count())
                .select_from(TranscriptLine)
                .where(TranscriptLine.session_id == session_id)
            )
            summary = await s.get(Summary, session_id)
            tenant = await s.get(Tenant, session.tenant_id)
        return SessionSnapshot(session, int(count or 0), summary, tenant)

    # -- housekeeping ----------------------------------------------------------------------

    async def abandoned_sessions(self, *, idle_before: float, now: float) -> list[Session]:
        """Live sessions untouched since ``idle_before`` whose producer lease (if any)
        has passed."""
        async with self.db.session() as s:
            rows = await s.exec(
                select(Session).where(
                    col(Session.status) == "live",
                    col(Session.updated_at) < idle_before,
                    (col(Session.producer_lease_until).is_(None))
                    | (col(Session.producer_lease_until) < now),
                    # nor a participant track's (issue 14): a silent track keeps it
                    ~select(ProducerTrack.session_id)
                    .where(
                        col(ProducerTrack.session_id) == col(Session.id),
                        col(ProducerTrack.lease_until) > now,
                    )
                    .exists(),
                )
            )
            return list(rows.all())

    async def delete_ended_sessions(self, *, ended_before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` sessions ended before ``ended_before`` with their lines,
        summaries and jobs, in one transaction; returns how many sessions went."""
        async with self.db.session() as s:
            rows = await s.exec(
                select(Session.id)
                .where(col(Session.status) == "ended", col(Session.ended_at) < ended_before)
                .limit(limit)
            )
            ids = list(rows.all())
            if not ids:
                return 0
            await s.exec(delete(LineRevision).where(col(LineRevision.session_id).in_(ids)))
            await s.exec(delete(TranscriptLine).where(col(TranscriptLine.session_id).in_(ids)))
            await s.exec(delete(Summary).where(col(Summary.session_id).in_(ids)))
            await s.exec(delete(Job).where(col(Job.session_id).in_(ids)))
            await s.exec(delete(ProducerTrack).where(col(ProducerTrack.session_id).in_(ids)))
            await s.exec(delete(SpeakerName).where(col(SpeakerName.session_id).in_(ids)))
            # a Jitsi meeting's mapping goes with its session (connecting again maps anew)
            await s.exec(delete(JitsiSession).where(col(JitsiSession.session_id).in_(ids)))
            await s.exec(delete(Document).where(col(Document.session_id).in_(ids)))
            await s.exec(delete(Session).where(col(Session.id).in_(ids)))
            await s.commit()
        return len(ids)
