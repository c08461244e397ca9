"""One root error for everything the service reports to a client.

Tree::

    MCUSTTError                 carries status_code (REST), code (envelope), close_code (WS)
    ├── BadRequest              400 BAD_REQUEST / WS 1003
    ├── Unauthorized            401 UNAUTHORIZED
    ├── Forbidden               403 FORBIDDEN
    ├── NotFound                404 NOT_FOUND
    ├── Conflict                409 CONFLICT
    ├── Unprocessable           422 UNPROCESSABLE
    ├── RateLimited             429 RATE_LIMITED (Retry-After)
    ├── Unavailable             503 UNAVAILABLE (Retry-After)
    ├── InvalidAudioFormat      WS 1003 INVALID_AUDIO_FORMAT
    └── FrameTooLarge           WS 1009 FRAME_TOO_LARGE

REST handlers raise these; the app turns them into ``{"error": {"code", "message"}}``.
WebSocket handlers turn them into an upgrade rejection (before accept) or a close code.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class MCUSTTError(Exception):
    status_code: int = 500
    code: str = "INTERNAL"
    close_code: int = 1011

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(max(1, int(retry_after)))

    def envelope(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(MCUSTTError):
    status_code = 400
    code = "BAD_REQUEST"
    close_code = 1003


class Unauthorized(MCUSTTError):
    status_code = 401
    code = "UNAUTHORIZED"
    close_code = 1008


class Forbidden(MCUSTTError):
    status_code = 403
    code = "FORBIDDEN"
    close_code = 1008


class NotFound(MCUSTTError):
    status_code = 404
    code = "NOT_FOUND"
    close_code = 1008


class Conflict(MCUSTTError):
    status_code = 409
    code = "CONFLICT"
    close_code = 1008


class Unprocessable(MCUSTTError):
    status_code = 422
    code = "UNPROCESSABLE"
    close_code = 1003


class RateLimited(MCUSTTError):
    status_code = 429
    code = "RATE_LIMITED"
    close_code = 1013


class Unavailable(MCUSTTError):
    status_code = 503
    code = "UNAVAILABLE"
    close_code = 1013


class InvalidAudioFormat(MCUSTTError):
    status_code = 400
    code = "INVALID_AUDIO_FORMAT"
    close_code = 1003


class FrameTooLarge(MCUSTTError):
    status_code = 413
    code = "FRAME_TOO_LARGE"
    close_code = 1009


def error_response(exc: MCUSTTError) -> JSONResponse:
    """The REST answer for an error: its status, the envelope, its headers (Retry-After)."""
    return JSONResponse(exc.envelope(), status_code=exc.status_code, headers=exc.headers)
