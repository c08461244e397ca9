"""Credentials: session JWTs (ingest / embed / subscribe), tenant keys, owner secrets.

Tenant keys and owner secrets are random strings stored only as SHA-256 digests (they
carry 256 bits of entropy, so a fast hash is enough; no salt or KDF needed). JWTs are
HS256-signed with the shared secret so any node that shares the database verifies any
other node's tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import jwt

from mcustt.errors import Unauthorized
from mcustt.wire import ErrorCode

Scope = Literal["ingest", "embed", "subscribe"]
READ_SCOPES: frozenset[str] = frozenset({"embed", "subscribe"})
ISSUER = "mcustt"
KEY_PREFIX = "sk_mcustt_"
_ID_ALPHABET = string.ascii_letters + string.digits


def random_id(length: int) -> str:
    """An unguessable id: 10 chars of base62 is ~59.5 bits."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def new_tenant_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_owner_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_digest(secret: str, stored: str) -> bool:
    return hmac.compare_digest(digest(secret), stored)


@dataclass(frozen=True)
class Claims:
    session_id: str
    tenant_id: str
    scope: Scope
    jti: str
    exp: int


class TokenIssuer:
    def __init__(self, secret: str, *, ingest_ttl_s: int, read_ttl_s: int) -> None:
        self._secret = secret
        self.ingest_ttl_s = ingest_ttl_s
        self.read_ttl_s = read_ttl_s

    def mint(self, session_id: str, tenant_id: str, scope: Scope) -> tuple[str, Claims]:
        now = int(time.time())
        ttl = self.ingest_ttl_s if scope == "ingest" else self.read_ttl_s
        claims = Claims(session_id, tenant_id, scope, uuid.uuid4().hex, now + ttl)
        token = jwt.encode(
            {
                "iss": ISSUER,
                "sub": session_id,
                "tid": tenant_id,
                "scope": scope,
                "jti": claims.jti,
                "iat": now,
                "exp": claims.exp,
            },
            self._secret,
            algorithm="HS256",
        )
        return token, claims

    def verify(self, token: str, *, scopes: frozenset[str] | set[str]) -> Claims:
        """Decode and check signature, expiry, issuer and scope.

        Raises:
            Unauthorized: with a code telling expired / invalid / wrong scope apart.
        """
        try:
            data = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "sub", "jti", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired", code=ErrorCode.TOKEN_EXPIRED) from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token", code=ErrorCode.INVALID_TOKEN) from None
        scope = data.get("scope")
        if scope not in scopes or scope not in ("ingest", "embed", "subscribe"):
            raise Unauthorized(
                f"token scope {scope!r} is not allowed here", code=ErrorCode.WRONG_TOKEN_SCOPE
            )
        return Claims(
            str(data["sub"]), str(data.get("tid", "")), scope, str(data["jti"]), int(data["exp"])
        )
