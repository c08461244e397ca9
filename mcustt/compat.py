"""Seed 000's (BizCrush's) ``/v1`` conventions, shared by its endpoints here
(``/v1/tts``, ``/v1/stt``, ``/v1/stt/stream``): the tenant key as ``?api_key=``, and the
seed's own error texts in place of mcustt's envelope.

A BizCrush client compares those texts and statuses, so they are the seed's, word for
word; mcustt's error code for the same refusal rides along where the body has room.
"""

from __future__ import annotations

from typing import Any

from mcustt import tenants
from mcustt.bodies import loads
from mcustt.errors import MCUSTTError, Unauthorized
from mcustt.state import AppState
from mcustt.store.models import Tenant
from mcustt.wire import ErrorCode

MISSING_AUTH = "Missing authorization"
INVALID_KEY = "Invalid API key"
EMPTY_BODY = "Empty request body"
INVALID_JSON = "Invalid JSON"
MISSING_AUDIO_URL = "Missing audio_url"


class V1Refused(Exception):
    """A refusal in the seed's words: ``status`` (HTTP) and ``error`` (its text)."""

    def __init__(self, status: int, error: str, code: str = ErrorCode.BAD_REQUEST) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.code = code


async def v1_tenant(state: AppState, api_key: str | None) -> Tenant:
    """The tenant whose key is ``?api_key=``.

    Raises:
        V1Refused: 401 ``Missing authorization`` or ``Invalid API key`` (a disabled
            tenant's key too: the seed has no other text for it).
    """
    if not api_key:
        raise V1Refused(401, MISSING_AUTH, ErrorCode.MISSING_TENANT_KEY)
    try:
        return await tenants.authenticate(state.db, api_key)
    except Unauthorized as exc:
        raise V1Refused(401, INVALID_KEY, exc.code) from None


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or the seed's 400s.

    Raises:
        V1Refused: 400 ``Empty request body`` or ``Invalid JSON`` (not JSON, or not an
            object).
    """
    if not raw.strip():
        raise V1Refused(400, EMPTY_BODY)
    try:
        data = loads(raw)
    except MCUSTTError:
        raise V1Refused(400, INVALID_JSON) from None
    if not isinstance(data, dict):
        raise V1Refused(400, INVALID_JSON)
    return data
