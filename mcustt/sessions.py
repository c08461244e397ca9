"""Sessions: creation, credentials, state, the single producer claim, and ending.

The rules live here (caps, which credential opens what, which error a refusal is); the
queries, including the atomic producer claim, live in :mod:`mcustt.store.sessions`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import structlog

from mcustt import caption_health, wire
from mcustt.config import Settings
from mcustt.errors import Conflict, NotFound, RateLimited, Unauthorized
from mcustt.metrics import Metrics
from mcustt.store.models import Session, Tenant
from mcustt.store.repo import Repo
from mcustt.tenants import brand_json
from mcustt.tokens import (
    READ_SCOPES,
    TokenIssuer,
    digest,
    new_owner_secret,
    random_id,
    same_digest,
)

log = structlog.get_logger(__name__)

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


def list_item(s: Session) -> wire.SessionListItem:
    """A session as ``GET /api/sessions`` lists it."""
    return {
        "sessionId": s.id,
        "title": s.title,
        "status": s.status,
        "createdAt": s.created_at,
        "endedAt": s.ended_at,
        "lastSeq": s.last_seq,
    }


def language_name(code: str | None) -> str | None:
    if code is None:
        return None
    return LANGUAGE_NAMES.get(code, code)


@dataclass(frozen=True)
class Credentials:
    """What a caller proved: a tenant key, a read token, or the owner secret."""

    kind: Literal["tenant", "read", "owner"]
    session: Session


class SessionService:
    def __init__(
        self,
        repo: Repo,
        settings: Settings,
        issuer: TokenIssuer,
        *,
        node_id: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.issuer = issuer
        #: this node, named in its claims (issue 13); None: claims hold by lease alone
        self.node_id = node_id
        self.metrics = metrics

    # -- creation and tokens -------------------------------------------------

    async def create(
        self,
        tenant: Tenant,
        *,
        title: str | None,
        source_lang: str | None,
        auto_detect: bool,
        language_hints: list[str] | None = None,
        keywords: list[str] | None = None,
        reduce_noise: bool = False,
        profanity_filter: wire.ProfanityFilter | None = None,
        session_id: str | None = None,
        words: bool = False,
    ) -> tuple[Session, wire.SessionCreated]:
        """A live session and the one-time response (tokens, URLs, owner secret).

        ``language_hints`` (issue 15) must already be checked against the recognizer
        (``Recognizer.check_languages``); without a ``source_lang`` the first hint is
        the session's language.
        """
        owner_secret = new_owner_secret()
        now = time.time()
        hints = wire.parse_language_hints(language_hints)
        session = Session(
            # An id the caller derived (the compatible stream's own session names), else new.
            id=session_id or random_id(10),
            tenant_id=tenant.id,
            title=title,
            source_lang=source_lang or (hints[0] if hints else "en-US"),
            auto_detect=auto_detect,
            owner_secret_hash=digest(owner_secret),
            created_at=now,
            updated_at=now,
            language_hints=hints,
            keywords=wire.merge_keywords(keywords),
            reduce_noise=reduce_noise,
            words=words,  # issue 17: finals carry word timings for every viewer
            # issue 17: resolved now, so a later change of the tenant's default does not
            # change what a running meeting shows
            profanity_filter=profanity_filter or tenant.profanity_filter or "off",
        )
        ingest_token, claims = self.issuer.mint(session.id, tenant.id, "ingest")
        session.ingest_jti = claims.jti
        capped = await self.repo.insert_session(session, max_live=tenant.max_sessions)
        if capped is not None:
            raise RateLimited(
                f"this tenant already has {capped.count} live sessions (maxSessions "
                f"{tenant.max_sessions}); end one first",
                code=wire.ErrorCode.SESSION_CAP,
                retry_after=30,
            )
        body: wire.SessionCreated = {
            "sessionId": session.id,
            **self.ingest_urls(session.id, ingest_token),
            **self.read_tokens(session),
            "ownerSecret": owner_secret,
            "brand": brand_json(tenant),
        }
        return session, body

    def ingest_urls(self, session_id: str, token: str) -> wire.IngestToken:
        base = self.settings.public_ws_url
        return {"ingestToken": token, "ingestUrl": f"{base}/ws/stt?token={token}"}

    def read_tokens(self, session: Session) -> wire.ReadTokens:
        embed, _ = self.issuer.mint(session.id, session.tenant_id, "embed")
        subscribe, _ = self.issuer.mint(session.id, session.tenant_id, "subscribe")
        http, ws = self.settings.public_url.rstrip("/"), self.settings.public_ws_url
        return {
            "embedToken": embed,
            "embedUrl": f"{http}/embed/{session.id}#t={embed}",
            "subscribeToken": subscribe,
            "subscribeUrl": f"{ws}/ws/subscribe?token={subscribe}",
        }

    async def rotate_ingest_token(
        self, session: Session, participant: wire.Participant | None = None
    ) -> wire.IngestToken:
        """A fresh single-use ingest token; it replaces any unused one (of the same
        participant, for a participant-bound token: each participant's track has its
        own token, and other participants' unused tokens stay valid)."""
        if session.status != "live":
            raise Conflict(
                "the session has ended; it cannot be ingested into",
                code=wire.ErrorCode.SESSION_ENDED,
            )
        if participant is None:
            token, claims = self.issuer.mint(session.id, session.tenant_id, "ingest")
            await self.repo.set_ingest_jti(session.id, claims.jti)
            return self.ingest_urls(session.id, token)
        name = participant.name or participant.id
        token, claims = self.issuer.mint(
            session.id, session.tenant_id, "ingest", participant=(participant.id, name)
        )
        await self.repo.set_track_jti(session.id, session.tenant_id, participant.id, claims.jti)
        return self.ingest_urls(session.id, token)

    # -- lookups and authorization --------------------------------------------

    async def get(self, session_id: str) -> Session | None:
        return await self.repo.get_session(session_id)

    async def list_for_tenant(self, tenant: Tenant, *, status: str | None) -> list[Session]:
        return await self.repo.list_sessions(tenant.id, status=status, limit=500)

    async def get_for_tenant(self, tenant: Tenant, session_id: str) -> Session:
        """Another tenant's session is 404, not 403, so ids don't leak."""
        session = await self.get(session_id)
        if session is None or session.tenant_id != tenant.id:
            raise NotFound(f"no session {session_id!r}", code=wire.ErrorCode.SESSION_NOT_FOUND)
        return session

    async def get_with_read_token(self, session_id: str, token: str) -> Session:
        claims = self.issuer.verify(token, scopes=READ_SCOPES)
        if claims.session_id != session_id:
            raise Unauthorized(
                "this token is for another session", code=wire.ErrorCode.INVALID_TOKEN
            )
        session = await self.get(session_id)
        if session is None:
            raise NotFound(f"no session {session_id!r}", code=wire.ErrorCode.SESSION_NOT_FOUND)
        await self._check_tenant_enabled(session)
        return session

    async def get_with_owner_secret(self, session_id: str, secret: str) -> Session:
        session = await self.get(session_id)
        if session is None:
            raise NotFound(f"no session {session_id!r}", code=wire.ErrorCode.SESSION_NOT_FOUND)
        if not same_digest(secret, session.owner_secret_hash):
            raise Unauthorized("invalid owner secret", code=wire.ErrorCode.INVALID_OWNER_SECRET)
        await self._check_tenant_enabled(session)
        return session

    async def _check_tenant_enabled(self, session: Session) -> None:
        """A disabled tenant's session credentials stop working, like its key (the
        sockets already refuse them; REST must agree)."""
        tenant = await self.repo.get_tenant(session.tenant_id)
        if tenant is None or tenant.disabled:
            raise Unauthorized(
                "the tenant of this session is disabled", code=wire.ErrorCode.TENANT_DISABLED
            )

    # -- the producer claim -------------------------------------------------------

    async def claim_producer(
        self,
        session_id: str,
        *,
        jti: str | None,
        producer_id: str,
        tenant: Tenant,
        participant_id: str | None = None,
    ) -> Session:
        """Burn the ingest token (when given) and take the producer lease, atomically:
        the session's (mixed producer), or ``participant_id``'s track's.

        Raises:
            NotFound: no such session.
            Unauthorized: the token was already used or replaced.
            Conflict: the session ended, or another producer holds the lease.
            RateLimited: the tenant is at its concurrent-ingest cap.
        """
        cap = self.settings.max_concurrent_ingest
        # A claim of a node whose heartbeat stopped is free (issue 13); without a node id
        # (no heartbeat running) claims are decided by their leases alone.
        dead_after = self.settings.node_dead_after_s if self.node_id else None
        if participant_id is not None:
            claim = await self.repo.claim_track(
                session_id,
                participant_id,
                tenant_id=tenant.id,
                jti=jti,
                producer_id=producer_id,
                lease_s=self.lease_s,
                max_active=cap,
                node_id=self.node_id,
                dead_after_s=dead_after,
            )
        else:
            claim = await self.repo.claim_producer(
                session_id,
                tenant_id=tenant.id,
                jti=jti,
                producer_id=producer_id,
                lease_s=self.lease_s,
                max_active=cap,
                node_id=self.node_id,
                dead_after_s=dead_after,
            )
        if claim.took_over is not None:
            log.warning(
                "producer claim taken over from a dead node",
                session_id=session_id,
                participant_id=participant_id,
                dead_node=claim.took_over,
            )
            if self.metrics is not None:
                self.metrics.producer_takeovers.inc()
        if claim.outcome == "capped":
            raise RateLimited(
                f"the tenant has {claim.active} producers connected (cap {cap})",
                code=wire.ErrorCode.INGEST_CAP,
                retry_after=30,
            )
        session = claim.session
        if claim.outcome == "claimed":
            assert session is not None
            return session
        # Explain the refusal, most specific first.
        if session is None:
            raise NotFound(f"no session {session_id!r}", code=wire.ErrorCode.SESSION_NOT_FOUND)
        if session.status != "live":
            raise Conflict("the session has ended", code=wire.ErrorCode.SESSION_ENDED)
        if participant_id is not None:
            track = await self.repo.get_track(session_id, participant_id)
            if jti is not None and (track is None or track.ingest_jti != jti):
                raise Unauthorized(
                    "this ingest token was already used or replaced; mint a fresh one for "
                    "this participant with POST /api/sessions/:id/ingest-token",
                    code=wire.ErrorCode.TOKEN_BURNED,
                )
            raise Conflict(
                f"participant {participant_id!r} already has a producer connected to this session",
                code=wire.ErrorCode.ALREADY_CONNECTED,
            )
        if jti is not None and session.ingest_jti != jti:
            raise Unauthorized(
                "this ingest token was already used or replaced; mint a fresh one with "
                "POST /api/sessions/:id/ingest-token",
                code=wire.ErrorCode.TOKEN_BURNED,
            )
        raise Conflict(
            "a producer is already connected to this session",
            code=wire.ErrorCode.ALREADY_CONNECTED,
        )

    @property
    def lease_s(self) -> float:
        return 30.0

    async def renew_producer(
        self, session_id: str, producer_id: str, participant_id: str | None = None
    ) -> bool:
        if participant_id is not None:
            return await self.repo.renew_track(
                session_id, participant_id, producer_id, lease_s=self.lease_s
            )
        return await self.repo.renew_producer(session_id, producer_id, lease_s=self.lease_s)

    async def release_producer(
        self, session_id: str, producer_id: str, participant_id: str | None = None
    ) -> None:
        if participant_id is not None:
            await self.repo.release_track(session_id, participant_id, producer_id)
        else:
            await self.repo.release_producer(session_id, producer_id)

    # -- ending ------------------------------------------------------------------

    async def mark_ended(self, session_id: str, reason: str) -> bool:
        """End a live session (idempotent). True if this call ended it."""
        return await self.repo.mark_ended(session_id, reason)

    async def producer_connected(self, session: Session) -> bool:
        """The mixed producer holds a lease, on a node that is alive (issue 13: a killed
        node's lease outlives it by up to ``lease_s``; its heartbeat stops at once)."""
        now = time.time()
        if not (
            session.producer_id
            and session.producer_lease_until
            and session.producer_lease_until > now
        ):
            return False
        return session.producer_node is None or not await self._node_dead(
            session.producer_node, now
        )

    async def any_producer_connected(self, session: Session) -> bool:
        """The mixed producer or any participant track holds a lease on a live node."""
        if await self.producer_connected(session):
            return True
        now = time.time()
        for track in await self.repo.connected_tracks(session.id):
            if track.node_id is None or not await self._node_dead(track.node_id, now):
                return True
        return False

    async def _node_dead(self, node_id: str, now: float) -> bool:
        """Whether ``node_id`` stopped beating (the same rule a claim's takeover uses;
        no row, a node from before heartbeats, is not dead: its lease decides)."""
        if not self.node_id:
            return False  # no heartbeats on this deployment's nodes (tests, one-shot tools)
        beat = await self.repo.node_heartbeat(node_id)
        return beat is not None and beat < now - self.settings.node_dead_after_s

    # -- state document (§9) -------------------------------------------------------

    async def state(self, session: Session, *, subscribers: int) -> wire.SessionState:
        snap = await self.repo.session_snapshot(session.id)
        assert snap is not None
        fresh = snap.session
        # A live session's summary is pending too: it is made when the session ends.
        summary_status: wire.SummaryStatus = (
            snap.summary.status if snap.summary is not None else "pending"
        )
        return {
            "sessionId": fresh.id,
            "status": fresh.status,
            "title": fresh.title,
            "sourceLang": fresh.source_lang,
            "autoDetect": fresh.auto_detect,
            "detectedLang": fresh.detected_lang,
            "detectedLangName": language_name(fresh.detected_lang),
            "lineCount": snap.line_count,
            "lastSeq": fresh.last_seq,
            "ingestConnected": await self.any_producer_connected(fresh),
            "subscribers": subscribers,
            "summaryStatus": summary_status,
            "audioSeconds": round(fresh.audio_ms / 1000, 1),
            "createdAt": fresh.created_at,
            "endedAt": fresh.ended_at,
            "endReason": fresh.end_reason,
            "brand": brand_json(snap.tenant) if snap.tenant else None,
            "languageHints": list(fresh.language_hints or []),
            "keywords": list(fresh.keywords or []),
            "reduceNoise": bool(fresh.reduce_noise),
            "words": bool(fresh.words),
            "profanityFilter": fresh.profanity_filter or "off",
            "latency": caption_health.stored_latency(fresh.caption_latency),
        }
