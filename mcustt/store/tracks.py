"""Participant tracks (issue 14): each participant's single-use ingest token and its
producer claim, one row per (session, participant).

The claim follows the session row's (:mod:`mcustt.store.sessions`): one conditional
UPDATE burns the token and takes the lease, so two connects with one token admit
exactly one, on any node and either database; the tenant's row lock serializes the
concurrent-ingest count with the claim. Every connected track counts as one producer
against that cap, like a mixed producer.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from mcustt.store.db import Database
from mcustt.store.models import ProducerTrack, Session
from mcustt.store.nodes import node_dead
from mcustt.store.sessions import ProducerClaim, _lock_tenant, active_producers


class TrackQueries:
    db: Database

    async def set_track_jti(
        self, session_id: str, tenant_id: str, participant_id: str, jti: str
    ) -> None:
        """Name the one token of this participant that may still connect (an unused
        older one of the same participant stops working; other participants' stay)."""
        now = time.time()
        dialect = postgresql if not self.db.sqlite else sqlite
        stmt = dialect.insert(ProducerTrack).values(
            session_id=session_id,
            participant_id=participant_id,
            tenant_id=tenant_id,
            ingest_jti=jti,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["session_id", "participant_id"],
            set_={"ingest_jti": jti, "updated_at": now},
        )
        async with self.db.session() as s:
            await s.exec(stmt)
            await s.commit()

    async def get_track(self, session_id: str, participant_id: str) -> ProducerTrack | None:
        async with self.db.session() as s:
            return await s.get(ProducerTrack, (session_id, participant_id))

    async def claim_track(
        self,
        session_id: str,
        participant_id: str,
        *,
        tenant_id: str,
        jti: str | None,
        producer_id: str,
        lease_s: float,
        max_active: int,
        node_id: str | None = None,
        dead_after_s: float | None = None,
    ) -> ProducerClaim:
        """Burn the participant's token ``jti`` and take its track's lease, in one
        conditional UPDATE, if the session is live and the tenant is under its cap.
        ``session`` in the answer is the session row as it is now (None: no session).

        ``jti`` None: an adapter that authenticated otherwise (the Jitsi bridge's
        credential) takes the lease with no token to burn; the track's row is created if
        it has none yet, and an unused token minted for the participant stays valid."""
        now = time.time()
        async with self.db.session() as s:
            await _lock_tenant(s, tenant_id)
            active = await active_producers(
                s,
                tenant_id,
                now,
                session_id=session_id,
                participant_id=participant_id,
                dead_after_s=dead_after_s,
            )
            if active >= max_active:
                return ProducerClaim("capped", None, active)
            session = await s.get(Session, session_id, populate_existing=True)
            if session is None or session.status != "live":
                return ProducerClaim("refused", session, active)
            free = (col(ProducerTrack.producer_id).is_(None)) | (
                col(ProducerTrack.lease_until) < now
            )
            if dead_after_s is not None:
                # issue 13: the claim of a node that stopped beating is free at once
                free = free | node_dead(ProducerTrack.node_id, now=now, dead_after_s=dead_after_s)
            conds = [
                col(ProducerTrack.session_id) == session_id,
                col(ProducerTrack.participant_id) == participant_id,
                free,
            ]
            values: dict[str, Any] = {
                "producer_id": producer_id,
                "lease_until": now + lease_s,
                "node_id": node_id,
                "updated_at": now,
            }
            if jti is not None:
                conds.append(col(ProducerTrack.ingest_jti) == jti)
                values["ingest_jti"] = None
            else:
                dialect = postgresql if not self.db.sqlite else sqlite
                await s.exec(
                    dialect.insert(ProducerTrack)
                    .values(
                        session_id=session_id,
                        participant_id=participant_id,
                        tenant_id=tenant_id,
                        created_at=now,
                        updated_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["session_id", "participant_id"])
                )
            track = await s.get(ProducerTrack, (session_id, participant_id))
            held = (
                (track.node_id or "?")
                if track is not None
                and track.producer_id is not None
                and (track.lease_until or 0) >= now
                else None
            )
            result = await s.exec(update(ProducerTrack).where(*conds).values(**values))
            await s.commit()
        claimed = result.rowcount == 1
        return ProducerClaim(
            "claimed" if claimed else "refused", session, active, held if claimed else None
        )

    async def renew_track(
        self, session_id: str, participant_id: str, producer_id: str, *, lease_s: float
    ) -> bool:
        """Extend the lease by ``lease_s`` from now, if this producer still holds it."""
        async with self.db.session() as s:
            result = await s.exec(
                update(ProducerTrack)
                .where(
                    col(ProducerTrack.session_id) == session_id,
                    col(ProducerTrack.participant_id) == participant_id,
                    col(ProducerTrack.producer_id) == producer_id,
                )
                .values(lease_until=time.time() + lease_s)
            )
            await s.commit()
            return bool(result.rowcount == 1)

    async def release_track(self, session_id: str, participant_id: str, producer_id: str) -> None:
        """Give up the track's claim, if this producer still holds it."""
        async with self.db.session() as s:
            await s.exec(
                update(ProducerTrack)
                .where(
                    col(ProducerTrack.session_id) == session_id,
                    col(ProducerTrack.participant_id) == participant_id,
                    col(ProducerTrack.producer_id) == producer_id,
                )
                .values(producer_id=None, lease_until=None, node_id=None, updated_at=time.time())
            )
            await s.commit()

    async def connected_tracks(self, session_id: str) -> list[ProducerTrack]:
        """The session's tracks whose producer holds a lease now (on any node)."""
        async with self.db.session() as s:
            rows = await s.exec(
                select(ProducerTrack).where(
                    col(ProducerTrack.session_id) == session_id,
                    col(ProducerTrack.lease_until) > time.time(),
                )
            )
            return list(rows.all())
