"""Sessions: creation, credentials, state, the single producer claim, and ending.

The producer claim is one conditional UPDATE (burn the ingest token, take the lease)
so that two simultaneous connects with one token admit exactly one, on any node and
on either database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mcustt.config import Settings
from mcustt.errors import Conflict, NotFound, RateLimited, Unauthorized
from mcustt.store.db import Database
from mcustt.store.models import Session, Summary, Tenant, TranscriptLine
from mcustt.tenants import brand_json
from mcustt.tokens import (
    READ_SCOPES,
    TokenIssuer,
    digest,
    new_owner_secret,
    random_id,
    same_digest,
)

LANGUAGE_NAMES = {
    "en-US": "English (US)",
    "en-GB": "English (UK)",
    "es-ES": "Spanish (Spain)",
    "es-US": "Spanish (US)",
    "fr-FR": "French (France)",
    "de-DE": "German (Germany)",
    "hi-IN": "Hindi (India)",
    "ko-KR": "Korean (South Korea)",
    "ja-JP": "Japanese (Japan)",
    "it-IT": "Italian (Italy)",
    "pt-BR": "Portuguese (Brazil)",
    "zh-CN": "Chinese (Simplified)",
}


def language_name(code: str | None) -> str | None:
    if code is None:
        return None
    return LANGUAGE_NAMES.get(code, code)


async def _lock_tenant(s: AsyncSession, tenant_id: str) -> None:
    """Serialize a tenant's capped operations (maxSessions, concurrent ingest) until the
    transaction ends: a no-op write on its row takes the row lock on PostgreSQL and the
    write lock on SQLite, so a count taken after it cannot be overtaken by a concurrent
    insert or claim (without it, 10 simultaneous creates all passed a cap of 3)."""
    await s.exec(
        update(Tenant).where(col(Tenant.id) == tenant_id).values(max_sessions=Tenant.max_sessions)
    )


@dataclass(frozen=True)
class Credentials:
    """What a caller proved: a tenant key, a read token, or the owner secret."""

    kind: Literal["tenant", "read", "owner"]
    session: Session


class SessionService:
    def __init__(self, db: Database, settings: Settings, issuer: TokenIssuer) -> None:
        self.db = db
        self.settings = settings
        self.issuer = issuer

    # -- creation and tokens -------------------------------------------------

    async def create(
        self, tenant: Tenant, *, title: str | None, source_lang: str | None, auto_detect: bool
    ) -> tuple[Session, dict[str, Any]]:
        """A live session and the one-time response (tokens, URLs, owner secret)."""
        async with self.db.session() as s:
            await _lock_tenant(s, tenant.id)
            live = await s.scalar(
                select(func.count())
                .select_from(Session)
                .where(Session.tenant_id == tenant.id, Session.status == "live")
            )
            if (live or 0) >= tenant.max_sessions:
                raise RateLimited(
                    f"this tenant already has {live} live sessions (maxSessions "
                    f"{tenant.max_sessions}); end one first",
                    code="SESSION_CAP",
                    retry_after=30,
                )
            owner_secret = new_owner_secret()
            now = time.time()
            session = Session(
                id=random_id(10),
                tenant_id=tenant.id,
                title=title,
                source_lang=source_lang or "en-US",
                auto_detect=auto_detect,
                owner_secret_hash=digest(owner_secret),
                created_at=now,
                updated_at=now,
            )
            ingest_token, claims = self.issuer.mint(session.id, tenant.id, "ingest")
            session.ingest_jti = claims.jti
            s.add(session)
            await s.commit()
        body: dict[str, Any] = {"sessionId": session.id}
        body.update(self.ingest_urls(session.id, ingest_token))
        body.update(self.read_tokens(session))
        body["ownerSecret"] = owner_secret
        body["brand"] = brand_json(tenant)
        return session, body

    def ingest_urls(self, session_id: str, token: str) -> dict[str, str]:
        base = self.settings.public_ws_url
        return {"ingestToken": token, "ingestUrl": f"{base}/ws/stt?token={token}"}

    def read_tokens(self, session: Session) -> dict[str, str]:
        embed, _ = self.issuer.mint(session.id, session.tenant_id, "embed")
        subscribe, _ = self.issuer.mint(session.id, session.tenant_id, "subscribe")
        http, ws = self.settings.public_url.rstrip("/"), self.settings.public_ws_url
        return {
            "embedToken": embed,
            "embedUrl": f"{http}/embed/{session.id}#t={embed}",
            "subscribeToken": subscribe,
            "subscribeUrl": f"{ws}/ws/subscribe?token={subscribe}",
        }

    async def rotate_ingest_token(self, session: Session) -> dict[str, str]:
        """A fresh single-use ingest token; it replaces any unused one."""
        if session.status != "live":
            raise Conflict(
                "the session has ended; it cannot be ingested into", code="SESSION_ENDED"
            )
        token, claims = self.issuer.mint(session.id, session.tenant_id, "ingest")
        async with self.db.session() as s:
            await s.exec(
                update(Session)
                .where(col(Session.id) == session.id)
                .values(ingest_jti=claims.jti, updated_at=time.time())
            )
            await s.commit()
        return self.ingest_urls(session.id, token)

    # -- lookups and authorization --------------------------------------------

    async def get(self, session_id: str) -> Session | None:
        async with self.db.session() as s:
            return await s.get(Session, session_id)

    async def list_for_tenant(self, tenant: Tenant, *, status: str | None) -> list[Session]:
        query = select(Session).where(Session.tenant_id == tenant.id)
        if status:
            query = query.where(Session.status == status)
        async with self.db.session() as s:
            rows = await s.exec(query.order_by(col(Session.created_at).desc()).limit(500))
            return list(rows.all())

    async def get_for_tenant(self, tenant: Tenant, session_id: str) -> Session:
        """Another tenant's session is 404, not 403, so ids don't leak."""
        session = await self.get(session_id)
        if session is None or session.tenant_id != tenant.id:
            raise NotFound(f"no session {session_id!r}", code="SESSION_NOT_FOUND")
        return session

    async def get_with_read_token(self, session_id: str, token: str) -> Session:
        claims = self.issuer.verify(token, scopes=READ_SCOPES)
        if claims.session_id != session_id:
            raise Unauthorized("this token is for another session", code="INVALID_TOKEN")
        session = await self.get(session_id)
        if session is None:
            raise NotFound(f"no session {session_id!r}", code="SESSION_NOT_FOUND")
        await self._check_tenant_enabled(session)
        return session

    async def get_with_owner_secret(self, session_id: str, secret: str) -> Session:
        session = await self.get(session_id)
        if session is None:
            raise NotFound(f"no session {session_id!r}", code="SESSION_NOT_FOUND")
        if not same_digest(secret, session.owner_secret_hash):
            raise Unauthorized("invalid owner secret", code="INVALID_OWNER_SECRET")
        await self._check_tenant_enabled(session)
        return session

    async def _check_tenant_enabled(self, session: Session) -> None:
        """A disabled tenant's session credentials stop working, like its key (the
        sockets already refuse them; REST must agree)."""
        async with self.db.session() as s:
            tenant = await s.get(Tenant, session.tenant_id)
        if tenant is None or tenant.disabled:
            raise Unauthorized("the tenant of this session is disabled", code="TENANT_DISABLED")

    # -- the producer claim -------------------------------------------------------

    async def claim_producer(
        self, session_id: str, *, jti: str | None, producer_id: str, tenant: Tenant
    ) -> Session:
        """Burn the ingest token (when given) and take the producer lease, atomically.

        Raises:
            NotFound: no such session.
            Unauthorized: the token was already used or replaced.
            Conflict: the session ended, or another producer holds the lease.
            RateLimited: the tenant is at its concurrent-ingest cap.
        """
        now = time.time()
        lease = now + self.lease_s
        async with self.db.session() as s:
            await _lock_tenant(s, tenant.id)
            active = await s.scalar(
                select(func.count())
                .select_from(Session)
                .where(
                    Session.tenant_id == tenant.id,
                    col(Session.producer_lease_until) > now,
                    Session.id != session_id,
                )
            )
            if (active or 0) >= self.settings.max_concurrent_ingest:
                raise RateLimited(
                    f"the tenant has {active} producers connected (cap "
                    f"{self.settings.max_concurrent_ingest})",
                    code="INGEST_CAP",
                    retry_after=30,
                )
            conds = [
                col(Session.id) == session_id,
                col(Session.status) == "live",
                (col(Session.producer_id).is_(None)) | (col(Session.producer_lease_until) < now),
            ]
            if jti is not None:
                conds.append(col(Session.ingest_jti) == jti)
            values: dict[str, Any] = {
                "producer_id": producer_id,
                "producer_lease_until": lease,
                "updated_at": now,
            }
            if jti is not None:
                values["ingest_jti"] = None
            result = await s.exec(update(Session).where(*conds).values(**values))
            await s.commit()
            if result.rowcount == 1:
                session = await s.get(Session, session_id, populate_existing=True)
                assert session is not None
                return session
            session = await s.get(Session, session_id, populate_existing=True)
        # Explain the refusal, most specific first.
        if session is None:
            raise NotFound(f"no session {session_id!r}", code="SESSION_NOT_FOUND")
        if session.status != "live":
            raise Conflict("the session has ended", code="SESSION_ENDED")
        if jti is not None and session.ingest_jti != jti:
            raise Unauthorized(
                "this ingest token was already used or replaced; mint a fresh one with "
                "POST /api/sessions/:id/ingest-token",
                code="TOKEN_BURNED",
            )
        raise Conflict("a producer is already connected to this session", code="ALREADY_CONNECTED")

    @property
    def lease_s(self) -> float:
        return 30.0

    async def renew_producer(self, session_id: str, producer_id: str) -> bool:
        async with self.db.session() as s:
            result = await s.exec(
                update(Session)
                .where(col(Session.id) == session_id, col(Session.producer_id) == producer_id)
                .values(producer_lease_until=time.time() + self.lease_s)
            )
            await s.commit()
            return bool(result.rowcount == 1)

    async def release_producer(self, session_id: str, producer_id: str) -> None:
        async with self.db.session() as s:
            await s.exec(
                update(Session)
                .where(col(Session.id) == session_id, col(Session.producer_id) == producer_id)
                .values(producer_id=None, producer_lease_until=None, updated_at=time.time())
            )
            await s.commit()

    # -- ending ------------------------------------------------------------------

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
            await s.commit()
            return bool(result.rowcount == 1)

    async def producer_connected(self, session: Session) -> bool:
        return bool(
            session.producer_id
            and session.producer_lease_until
            and session.producer_lease_until > time.time()
        )

    # -- state document (§9) -------------------------------------------------------

    async def state(self, session: Session, *, subscribers: int) -> dict[str, Any]:
        async with self.db.session() as s:
            fresh = await s.get(Session, session.id, populate_existing=True)
            assert fresh is not None
            count = await s.scalar(
                select(func.count())
                .select_from(TranscriptLine)
                .where(TranscriptLine.session_id == session.id)
            )
            summary = await s.get(Summary, session.id)
            tenant = await s.get(Tenant, fresh.tenant_id)
        # A live session's summary is pending too: it is made when the session ends.
        summary_status = summary.status if summary is not None else "pending"
        return {
            "sessionId": fresh.id,
            "status": fresh.status,
            "title": fresh.title,
            "sourceLang": fresh.source_lang,
            "autoDetect": fresh.auto_detect,
            "detectedLang": fresh.detected_lang,
            "detectedLangName": language_name(fresh.detected_lang),
            "lineCount": int(count or 0),
            "lastSeq": fresh.last_seq,
            "ingestConnected": await self.producer_connected(fresh),
            "subscribers": subscribers,
            "summaryStatus": summary_status,
            "audioSeconds": round(fresh.audio_ms / 1000, 1),
            "createdAt": fresh.created_at,
            "endedAt": fresh.ended_at,
            "endReason": fresh.end_reason,
            "brand": brand_json(tenant) if tenant else None,
        }
