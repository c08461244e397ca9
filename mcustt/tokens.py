"""Credentials: session JWTs (ingest / embed / subscribe), tenant keys, owner secrets.

Tenant keys and owner secrets are random strings stored only as SHA-256 digests (they
carry 256 bits of entropy, so a fast hash is enough; no salt or KDF needed). JWTs are
HS256-signed with the shared secret so any node that shares the database verifies any
other node's tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
import uuid
from dataclasses import dataclass
from typing import Literal, cast

import jwt

from mcustt.errors import Unauthorized
from mcustt.wire import PARTICIPANT_ID_PATTERN, UNSTORABLE_TEXT, ErrorCode

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
    #: the participant an ingest token is bound to (issue 14): its track, and its name
    participant_id: str | None = None
    participant_name: str | None = None


class TokenIssuer:
    def __init__(self, secret: str, *, ingest_ttl_s: int, read_ttl_s: int) -> None:
        self._secret = secret
        self.ingest_ttl_s = ingest_ttl_s
        self.read_ttl_s = read_ttl_s

    def mint(
        self,
        session_id: str,
        tenant_id: str,
        scope: Scope,
        *,
        participant: tuple[str, str] | None = None,
    ) -> tuple[str, Claims]:
        """``participant``: (id, name) an ingest token is bound to (claims ``pid``,
        ``pname``)."""
        now = int(time.time())
        ttl = self.ingest_ttl_s if scope == "ingest" else self.read_ttl_s
        pid, pname = participant if participant is not None else (None, None)
        claims = Claims(session_id, tenant_id, scope, uuid.uuid4().hex, now + ttl, pid, pname)
        payload: dict[str, object] = {
            "iss": ISSUER,
            "sub": session_id,
            "tid": tenant_id,
            "scope": scope,
            "jti": claims.jti,
            "iat": now,
            "exp": claims.exp,
        }
        if participant is not None:
            payload["pid"], payload["pname"] = participant
        token = jwt.encode(payload, self._secret, algorithm="HS256")
        return token, claims

    def verify(self, token: str, *, scopes: frozenset[str] | set[str]) -> Claims:
        """Decode and check signature, expiry, issuer, the claims' types and the scope.

        A token signed with our secret is still input: its claims are checked for type
        and shape before anything uses them (a list as ``scope``, a NUL in ``sub`` or an
        ``exp`` of ``Infinity`` must be a 401, not an error deeper down).

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
        # PyJWT converts exp/iat/nbf with int(): an Infinity in a signed payload raises
        # OverflowError, and a deeply nested one RecursionError, not a PyJWTError.
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError):
            raise Unauthorized("invalid token", code=ErrorCode.INVALID_TOKEN) from None
        scope = data.get("scope")
        if not isinstance(scope, str):
            raise _invalid("scope")
        if scope not in scopes or scope not in ("ingest", "embed", "subscribe"):
            raise Unauthorized(
                f"token scope {scope!r} is not allowed here", code=ErrorCode.WRONG_TOKEN_SCOPE
            )
        sub, tid, jti, exp = data["sub"], data.get("tid", ""), data["jti"], data["exp"]
        for name, value in (("sub", sub), ("jti", jti)):
            if not isinstance(value, str) or not _CLAIM_ID.fullmatch(value):
                raise _invalid(name)
        if not isinstance(tid, str) or (tid and not _CLAIM_ID.fullmatch(tid)):
            raise _invalid("tid")
        # bool is an int to Python; a float exp (allowed by RFC 7519) is truncated.
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not 0 < exp < 2**63:
            raise _invalid("exp")
        pid, pname = data.get("pid"), data.get("pname")
        if pid is not None and (
            not isinstance(pid, str) or not _PARTICIPANT_ID.fullmatch(pid) or scope != "ingest"
        ):
            raise _invalid("pid")
        if pname is not None and (
            pid is None
            or not isinstance(pname, str)
            or not 0 < len(pname) <= 100
            or UNSTORABLE_TEXT.search(pname)
        ):
            raise _invalid("pname")
        return Claims(sub, tid, cast(Scope, scope), jti, int(exp), pid, pname)


#: What an id claim (``sub``, ``tid``, ``jti``) may hold: the alphabet and length of the
#: ids we mint, so a signed token cannot carry a NUL or a megabyte into a query.
_CLAIM_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
#: A participant id claim: the wire's participant id pattern.
_PARTICIPANT_ID = re.compile(PARTICIPANT_ID_PATTERN)


def _invalid(claim: str) -> Unauthorized:
    return Unauthorized(f"invalid token: bad {claim} claim", code=ErrorCode.INVALID_TOKEN)
