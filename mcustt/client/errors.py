"""The client's errors: an error answer of the server as a typed exception.

Tree::

    MCUSTTClientError       status (0 for a socket), code (the envelope's), message
    ├── BadRequest          400
    ├── Unauthorized        401
    ├── Forbidden           403
    ├── NotFound            404
    ├── Conflict            409
    ├── Unprocessable       422
    ├── RateLimited         429 (retry_after)
    ├── Unavailable         503 (retry_after)
    ├── ServerError         any other 5xx
    └── StreamClosed        an ingest socket closed for good (close_code)

REST answers and refused WebSocket upgrades both go through :func:`error_from`, so the
REST client and the socket clients raise the same classes.
"""

from __future__ import annotations

import contextlib
import enum
import json
import time
from email.utils import parsedate_to_datetime

import httpx


class ClientCode(enum.StrEnum):
    """Codes the client itself gives an error (the server's are :class:`wire.ErrorCode`)."""

    CLOSED = "CLOSED"  # the producer was closed, or the socket closed without a reason
    CONNECT_FAILED = "CONNECT_FAILED"  # the server stayed unreachable
    RECONNECT_FAILED = "RECONNECT_FAILED"  # something other than the server stopped it
    NO_READY = "NO_READY"  # the ingest socket never said ``ready``
    NO_OWNER_SECRET = "NO_OWNER_SECRET"  # a reconnect needs a token, and nothing mints one
    CLIENT_ERROR = "CLIENT_ERROR"  # the caller's event callback raised
    JOB_FAILED = "JOB_FAILED"  # a waited-for batch job failed


class MCUSTTClientError(Exception):
    """An error answer from the server (or a socket closed for good).

    ``status`` is the HTTP status (0 for a socket closed after it was open), ``code``
    the envelope's machine-readable code, ``message`` its explanation.
    """

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class BadRequest(MCUSTTClientError):
    """400: malformed body, parameter or format."""


class Unauthorized(MCUSTTClientError):
    """401: missing or invalid credential, or one this operation does not accept."""


class Forbidden(MCUSTTClientError):
    """403: admin API disabled, or origin not allowed."""


class NotFound(MCUSTTClientError):
    """404: no such tenant, session or job (for these credentials)."""


class Conflict(MCUSTTClientError):
    """409: the session ended, or another producer is connected."""


class Unprocessable(MCUSTTClientError):
    """422: e.g. an Idempotency-Key reused with another body."""


class RateLimited(MCUSTTClientError):
    """429: rate limit or tenant cap; ``retry_after`` says how long to wait."""


class Unavailable(MCUSTTClientError):
    """503: summarizer unconfigured, capacity; ``retry_after`` says how long to wait."""


class ServerError(MCUSTTClientError):
    """Any other 5xx."""


class StreamClosed(MCUSTTClientError):
    """The ingest socket closed for good (bad audio, daily cap, too many failed
    reconnects). ``close_code`` is the WebSocket close code when there was one."""

    def __init__(self, code: str, message: str, *, close_code: int | None = None) -> None:
        super().__init__(0, code, message)
        self.close_code = close_code


_BY_STATUS: dict[int, type[MCUSTTClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Unprocessable,
    429: RateLimited,
    503: Unavailable,
}


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


def error_from(status: int, body: bytes, headers: httpx.Headers | None = None) -> MCUSTTClientError:
    """The typed exception for an error answer (REST, or a refused WebSocket upgrade)."""
    code, message = f"HTTP_{status}", body.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        envelope = json.loads(body)["error"]
        code, message = str(envelope["code"]), str(envelope["message"])
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else MCUSTTClientError)
    retry = _retry_after(headers.get("retry-after")) if headers is not None else None
    return cls(status, code, message, retry_after=retry)
