"""Jitsi bridge rows (issue 14): bridge credentials and the meeting → session mapping."""

from __future__ import annotations

import time

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from mcustt.store.db import Database
from mcustt.store.models import BridgeKey, JitsiSession


class BridgeQueries:
    db: Database

    # -- credentials ------------------------------------------------------------------

    async def insert_bridge_key(self, key: BridgeKey) -> BridgeKey:
        async with self.db.session() as s:
            s.add(key)
            await s.commit()
        return key

    async def list_bridge_keys(self, tenant_id: str) -> list[BridgeKey]:
        """The tenant's bridge credentials, revoked ones included, oldest first."""
        async with self.db.session() as s:
            rows = await s.exec(
                select(BridgeKey)
                .where(BridgeKey.tenant_id == tenant_id)
                .order_by(col(BridgeKey.created_at), col(BridgeKey.id))
            )
            return list(rows.all())

    async def bridge_key_by_hash(self, key_hash: str) -> BridgeKey | None:
        async with self.db.session() as s:
            rows = await s.exec(select(BridgeKey).where(BridgeKey.key_hash == key_hash))
            return rows.first()

    async def revoke_bridge_key(self, tenant_id: str, key_id: str) -> BridgeKey | None:
        """Revoke (idempotent: the first revocation time stays); None if the tenant has
        no such key."""
        async with self.db.session() as s:
            key = await s.get(BridgeKey, key_id)
            if key is None or key.tenant_id != tenant_id:
                return None
            if key.revoked_at is None:
                key.revoked_at = time.time()
                s.add(key)
                await s.commit()
            return key

    async def touch_bridge_key(self, key_id: str) -> None:
        async with self.db.session() as s:
            await s.exec(
                update(BridgeKey)
                .where(col(BridgeKey.id) == key_id)
                .values(last_used_at=time.time())
            )
            await s.commit()

    # -- meeting → session ------------------------------------------------------------

    async def jitsi_session(self, tenant_id: str, jitsi_session_id: str) -> JitsiSession | None:
        async with self.db.session() as s:
            return await s.get(JitsiSession, (tenant_id, jitsi_session_id))

    async def map_jitsi_session(
        self, tenant_id: str, jitsi_session_id: str, session_id: str, *, replaces: str | None
    ) -> str:
        """Point the meeting at ``session_id`` unless another caller got there first.

        ``replaces`` is the session the caller saw mapped (None: no row). The write is
        conditional on it, so of two nodes racing to start a meeting's session exactly
        one wins; returns the session id the meeting maps to afterwards (the winner's).
        """
        now = time.time()
        async with self.db.session() as s:
            if replaces is None:
                s.add(
                    JitsiSession(
                        tenant_id=tenant_id,
                        jitsi_session_id=jitsi_session_id,
                        session_id=session_id,
                        created_at=now,
                        updated_at=now,
                    )
                )
                try:
                    await s.commit()
                    return session_id
                except IntegrityError:
                    await s.rollback()
            else:
                result = await s.exec(
                    update(JitsiSession)
                    .where(
                        col(JitsiSession.tenant_id) == tenant_id,
                        col(JitsiSession.jitsi_session_id) == jitsi_session_id,
                        col(JitsiSession.session_id) == replaces,
                    )
                    .values(session_id=session_id, lease_until=None, updated_at=now)
                )
                await s.commit()
                if result.rowcount == 1:
                    return session_id
        row = await self.jitsi_session(tenant_id, jitsi_session_id)
        assert row is not None  # it was there when our write lost
        return row.session_id

    async def renew_jitsi_lease(
        self, tenant_id: str, jitsi_session_id: str, *, until: float
    ) -> None:
        """A bridge socket of the meeting is connected (on some node) until ``until``."""
        async with self.db.session() as s:
            await s.exec(
                update(JitsiSession)
                .where(
                    col(JitsiSession.tenant_id) == tenant_id,
                    col(JitsiSession.jitsi_session_id) == jitsi_session_id,
                )
                .values(lease_until=until, updated_at=time.time())
            )
            await s.commit()
