"""One root error for everything the service reports to a client.

Tree (the classes that belong to a seam live next to it)::

    MCUSTTError                 carries status_code (REST), code (envelope), close_code (WS)
    ├── BadRequest              400 BAD_REQUEST / WS 1003
    │   └── UnknownVoice        400 UNKNOWN_VOICE                 (mcustt.tts.base)
    ├── Unauthorized            401 UNAUTHORIZED / WS 1008
    ├── Forbidden               403 FORBIDDEN / WS 1008
    ├── NotFound                404 NOT_FOUND / WS 1008
    ├── MethodNotAllowed        405 METHOD_NOT_ALLOWED
    ├── Conflict                409 CONFLICT / WS 1008
    ├── PayloadTooLarge         413 PAYLOAD_TOO_LARGE
    ├── UnsupportedMediaType    415 UNSUPPORTED_MEDIA_TYPE
    ├── Unprocessable           422 UNPROCESSABLE / WS 1003
    ├── RateLimited             429 RATE_LIMITED (Retry-After) / WS 1013
    ├── DailyCapReached         429 DAILY_CAP_REACHED / WS 1008 (the session ends)
    ├── Unavailable             503 UNAVAILABLE (Retry-After) / WS 1013
    │   ├── NodeDraining        503 NODE_DRAINING / WS 1012          (mcustt.admission)
    │   ├── NodeOverloaded      503 NODE_OVERLOADED / WS 1013        (mcustt.admission)
    │   └── StoreUnavailable    503 STORE_UNAVAILABLE (Retry-After) / WS 1013 (mcustt.outages)
    ├── InvalidAudioFormat      400 INVALID_AUDIO_FORMAT / WS 1003
    ├── FrameTooLarge           413 FRAME_TOO_LARGE / WS 1009
    ├── RecognizerError         503 RECOGNIZER_FAILED / WS 1011   (mcustt.recognizers.base)
    ├── SummarizerError         502 SUMMARIZER_FAILED             (mcustt.summarizers.base)
    ├── SummarizerUnavailable   503 SUMMARIZER_UNCONFIGURED       (mcustt.summarizers.base)
    ├── TTSError                502 TTS_FAILED                    (mcustt.tts.base)
    ├── TTSUnavailable          503 TTS_UNAVAILABLE (Retry-After) (mcustt.tts.base)
    ├── SignedUrlExpired        410 SIGNED_URL_EXPIRED            (mcustt.speech)
    └── ConfigError             CONFIG, at start-up and in the CLI (mcustt.config)
        └── SchemaMismatch      SCHEMA_MISMATCH                   (mcustt.store.db)

The codes are :class:`mcustt.wire.ErrorCode`, the close codes :class:`mcustt.wire.CloseCode`.
REST handlers raise these; the app turns them into the envelope of :class:`mcustt.wire.Error`.
WebSocket handlers turn them into an upgrade rejection (before accept) or a close code.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from mcustt import wire
from mcustt.wire import CloseCode, ErrorCode


class MCUSTTError(Exception):
    status_code: int = 500
    code: ErrorCode = ErrorCode.INTERNAL
    close_code: int = CloseCode.INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
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

    def envelope(self) -> wire.Error:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(MCUSTTError):
    status_code = 400
    code = ErrorCode.BAD_REQUEST
    close_code = CloseCode.UNSUPPORTED_DATA


class UnsupportedLanguage(BadRequest):
    """A language hint the recognizer cannot serve (issue 15): refused up front (400, or
    an error frame and close 1003 on a socket) rather than captioned in the wrong language."""

    code = ErrorCode.UNSUPPORTED_LANGUAGE


class Unauthorized(MCUSTTError):
    status_code = 401
    code = ErrorCode.UNAUTHORIZED
    close_code = CloseCode.POLICY_VIOLATION


class Forbidden(MCUSTTError):
    status_code = 403
    code = ErrorCode.FORBIDDEN
    close_code = CloseCode.POLICY_VIOLATION


class NotFound(MCUSTTError):
    status_code = 404
    code = ErrorCode.NOT_FOUND
    close_code = CloseCode.POLICY_VIOLATION


class Conflict(MCUSTTError):
    status_code = 409
    code = ErrorCode.CONFLICT
    close_code = CloseCode.POLICY_VIOLATION


class MethodNotAllowed(MCUSTTError):
    status_code = 405
    code = ErrorCode.METHOD_NOT_ALLOWED


class PayloadTooLarge(MCUSTTError):
    status_code = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(MCUSTTError):
    status_code = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class Unprocessable(MCUSTTError):
    status_code = 422
    code = ErrorCode.UNPROCESSABLE
    close_code = CloseCode.UNSUPPORTED_DATA


class RateLimited(MCUSTTError):
    status_code = 429
    code = ErrorCode.RATE_LIMITED
    close_code = CloseCode.TRY_AGAIN_LATER


class DailyCapReached(MCUSTTError):
    """The tenant's daily audio is used up: the session that reached it ends."""

    status_code = 429
    code = ErrorCode.DAILY_CAP_REACHED
    close_code = CloseCode.POLICY_VIOLATION


class Unavailable(MCUSTTError):
    status_code = 503
    code = ErrorCode.UNAVAILABLE
    close_code = CloseCode.TRY_AGAIN_LATER


class InvalidAudioFormat(MCUSTTError):
    status_code = 400
    code = ErrorCode.INVALID_AUDIO_FORMAT
    close_code = CloseCode.UNSUPPORTED_DATA


class FrameTooLarge(MCUSTTError):
    status_code = 413
    code = ErrorCode.FRAME_TOO_LARGE
    close_code = CloseCode.MESSAGE_TOO_BIG


def error_response(exc: MCUSTTError) -> JSONResponse:
    """The REST answer for an error: its status, the envelope, its headers (Retry-After)."""
    return JSONResponse(exc.envelope(), status_code=exc.status_code, headers=exc.headers)
