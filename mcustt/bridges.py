"""Jitsi bridge credentials and meetings (issue 14): the rules behind ``/transcribe``.

* A **bridge credential** (``brk_…``) lets a videobridge open ``/transcribe`` for its
  tenant and nothing else. It fits in the URL Jicofo is configured with (the videobridge
  can also send it as ``Authorization: Bearer``), is stored as a SHA-256 digest like a
  tenant key, and the tenant mints, lists and revokes it over REST. Revoking one also
  cuts the sockets using it (at their next lease renewal, within
  :data:`LEASE_RENEW_S`).
* A **meeting** (the bridge's ``sessionId``, Jicofo's meeting id) maps to one mcustt
  session per tenant: created on the first connect, continued by every later connect
  (bridge reconnects, or several bridges of one conference) while it is live, replaced
  by a new session once it has ended.
* When a meeting's last bridge socket closes, its session ends after
  ``MCUSTT_JITSI_END_GRACE_S`` unless a bridge socket (on any node) renewed the
  meeting's lease meanwhile: a reconnect continues the same session and seq, and a
  meeting that is over gets its summary soon after instead of when it is abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog

from mcustt import wire
from mcustt.config import Settings
from mcustt.errors import NotFound, Unauthorized
from mcustt.sessions import SessionService
from mcustt.store.models import BridgeKey, Session, Tenant
from mcustt.store.repo import Repo
from mcustt.tokens import digest, random_id

log = structlog.get_logger(__name__)

KEY_PREFIX = "brk_"
#: a connected bridge socket renews its meeting's lease this often…
LEASE_RENEW_S = 10.0
#: …for this long (a node that died stops renewing; the lease runs out)
LEASE_S = 30.0

EndSession = Callable[[Session, str], Awaitable[None]]


def new_bridge_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_info(key: BridgeKey) -> wire.BridgeKeyInfo:
    return {
        "id": key.id,
        "name": key.name,
        "keyPrefix": key.key_prefix,
        "createdAt": key.created_at,
        "revokedAt": key.revoked_at,
        "lastUsedAt": key.last_used_at,
    }


class BridgeService:
    def __init__(
        self, repo: Repo, sessions: SessionService, settings: Settings, end_session: EndSession
    ) -> None:
        self.repo = repo
        self.sessions = sessions
        self.settings = settings
        self.end_session = end_session
        #: per-meeting locks: this node's sockets of one meeting resolve it one at a time
        self._resolving: dict[tuple[str, str], asyncio.Lock] = {}
        #: the grace-period enders this node runs, by session id
        self._enders: dict[str, asyncio.Task[None]] = {}

    # -- credentials ------------------------------------------------------------------

    async def mint(self, tenant: Tenant, name: str | None) -> wire.BridgeKeyWithSecret:
        secret = new_bridge_key()
        row = BridgeKey(
            id="brg_" + random_id(12),
            tenant_id=tenant.id,
            name=name,
            key_hash=digest(secret),
            key_prefix=secret[:12],
            created_at=time.time(),
        )
        await self.repo.insert_bridge_key(row)
        url = (
            f"{self.settings.public_ws_url}/transcribe?sessionId={{{{MEETING_ID}}}}"
            f"&sendBack=true&sendBackInterim=true&key={secret}"
        )
        return {**key_info(row), "key": secret, "urlTemplate": url, "note": "shown once"}

    async def list(self, tenant: Tenant) -> wire.BridgeKeyList:
        return {"bridges": [key_info(k) for k in await self.repo.list_bridge_keys(tenant.id)]}

    async def revoke(self, tenant: Tenant, key_id: str) -> wire.BridgeKeyInfo:
        key = await self.repo.revoke_bridge_key(tenant.id, key_id)
        if key is None:
            raise NotFound(
                f"no bridge credential {key_id!r}", code=wire.ErrorCode.BRIDGE_KEY_NOT_FOUND
            )
        return key_info(key)

    async def authenticate(self, secret: str | None) -> tuple[BridgeKey, Tenant]:
        """The credential's row and tenant, or the refusal (bad, revoked, tenant off)."""
        if not secret:
            raise Unauthorized(
                "put the bridge credential in the URL (?key=brk_…) or an Authorization: "
                "Bearer header; mint one with POST /api/bridges",
                code=wire.ErrorCode.INVALID_BRIDGE_KEY,
            )
        key = None
        if secret.startswith(KEY_PREFIX) and len(secret) <= 128:
            key = await self.repo.bridge_key_by_hash(digest(secret))
        if key is None:
            raise Unauthorized("invalid bridge credential", code=wire.ErrorCode.INVALID_BRIDGE_KEY)
        if key.revoked_at is not None:
            raise Unauthorized(
                "this bridge credential was revoked", code=wire.ErrorCode.BRIDGE_KEY_REVOKED
            )
        tenant = await self.repo.get_tenant(key.tenant_id)
        if tenant is None or tenant.disabled:
            raise Unauthorized(
                "the tenant of this bridge credential is disabled",
                code=wire.ErrorCode.TENANT_DISABLED,
            )
        await self.repo.touch_bridge_key(key.id)
        return key, tenant

    async def still_valid(self, key_id: str, key_hash: str) -> bool:
        key = await self.repo.bridge_key_by_hash(key_hash)
        return key is not None and key.id == key_id and key.revoked_at is None

    # -- meetings ------------------------------------------------------------------------

    async def resolve(self, tenant: Tenant, meeting: str, *, lang: str | None) -> Session:
        """The live session of this meeting: the mapped one, or a new one (mapped).

        Raises:
            RateLimited: a new session would exceed the tenant's ``maxSessions``.
        """
        lock = self._resolving.setdefault((tenant.id, meeting), asyncio.Lock())
        try:
            async with lock:
                return await self._resolve(tenant, meeting, lang=lang)
        finally:
            if not lock.locked():
                self._resolving.pop((tenant.id, meeting), None)

    async def _resolve(self, tenant: Tenant, meeting: str, *, lang: str | None) -> Session:
        row = await self.repo.jitsi_session(tenant.id, meeting)
        if row is not None:
            session = await self.sessions.get(row.session_id)
            if session is not None and session.status == "live":
                self.cancel_end(session.id)
                return session
        created, _ = await self.sessions.create(
            tenant,
            title=f"Jitsi meeting {meeting}"[:500],
            source_lang=lang,
            auto_detect=lang is None,
        )
        winner = await self.repo.map_jitsi_session(
            tenant.id, meeting, created.id, replaces=row.session_id if row else None
        )
        if winner == created.id:
            log.info("jitsi meeting mapped", session_id=created.id, tenant_id=tenant.id)
            return created
        # Another node started the meeting's session at the same moment: use that one,
        # and end ours (it never had audio).
        await self.end_session(created, "superseded")
        session = await self.sessions.get(winner)
        assert session is not None
        return session

    async def info(self, tenant: Tenant, meeting: str) -> wire.JitsiSessionInfo:
        row = await self.repo.jitsi_session(tenant.id, meeting)
        session = await self.sessions.get(row.session_id) if row is not None else None
        if session is None:
            raise NotFound(
                "no session for this Jitsi meeting yet (it is created when the videobridge "
                "connects)",
                code=wire.ErrorCode.JITSI_SESSION_NOT_FOUND,
            )
        return {
            "jitsiSessionId": meeting,
            "sessionId": session.id,
            "status": session.status,
            **self.sessions.read_tokens(session),
        }

    async def renew(self, tenant_id: str, meeting: str) -> None:
        await self.repo.renew_jitsi_lease(tenant_id, meeting, until=time.time() + LEASE_S)

    async def disconnected(self, tenant_id: str, meeting: str, session: Session) -> None:
        """A bridge socket of the meeting closed: give up its lease and end the session
        after the grace period unless a bridge socket renews the lease by then."""
        await self.repo.renew_jitsi_lease(tenant_id, meeting, until=time.time())
        grace = self.settings.jitsi_end_grace_s
        if grace <= 0 or session.id in self._enders:
            return
        task = asyncio.create_task(
            self._end_later(tenant_id, meeting, session.id, grace), name=f"jitsi-end-{session.id}"
        )
        self._enders[session.id] = task
        task.add_done_callback(lambda _t: self._enders.pop(session.id, None))

    def cancel_end(self, session_id: str) -> None:
        task = self._enders.pop(session_id, None)
        if task is not None:
            task.cancel()

    async def _end_later(self, tenant_id: str, meeting: str, session_id: str, grace: float) -> None:
        await asyncio.sleep(grace)
        row = await self.repo.jitsi_session(tenant_id, meeting)
        if row is None or row.session_id != session_id:
            return
        if row.lease_until is not None and row.lease_until > time.time():
            # A bridge socket is connected on another node (one here would have
            # cancelled this): when it closes, its node schedules the end.
            return
        session = await self.sessions.get(session_id)
        if session is not None and session.status == "live":
            log.info("jitsi meeting ended: no bridge reconnected", session_id=session_id)
            await self.end_session(session, "bridge-gone")

    async def aclose(self) -> None:
        for task in list(self._enders.values()):
            task.cancel()
        for task in list(self._enders.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._enders.clear()
