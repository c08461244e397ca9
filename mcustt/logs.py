"""Structured JSON logs (structlog) with request, tenant and session ids bound per request.

Secrets never reach a log line: the redaction processor masks any field whose name says
key / token / secret / authorization, and access logs record the path without its query
string (ingest and subscribe URLs carry tokens there) nor a WHIP resource id (a
capability: it alone ends the producer's session).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_HANDLER_NAME = "mcustt"
_SECRET_FIELD = re.compile(r"(key|token|secret|authorization|password)", re.IGNORECASE)
_SECRET_VALUE = re.compile(
    r"(sk_mcustt_[A-Za-z0-9_\-]+|brk_[A-Za-z0-9_\-]+"  # tenant keys, Jitsi bridge keys
    r"|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)"
)


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name, value in list(event.items()):
        if _SECRET_FIELD.search(name) and name not in {"event"}:
            event[name] = "[redacted]"
        elif isinstance(value, str):
            event[name] = scrub(value)
    return event


#: Credentials in query strings: tokens, keys (seed 000's ``api_key`` too), and the
#: signatures of signed URLs (an ``audio_url`` to transcribe is often one: S3's
#: ``X-Amz-Signature``, GCS's ``X-Goog-Signature``, ``sig``/``signature``, a Firebase
#: ``token``), which the HTTP client logs when it fetches them.
_QUERY_SECRET = re.compile(
    r"((?:token|t|api_key|key|ownerSecret|sig|signature|x-amz-signature|x-goog-signature"
    r"|x-amz-security-token)=)[^&\s\"']+",
    re.IGNORECASE,
)
#: A WHIP resource URL is a capability (it alone hangs up the producer, RFC 9725), so an
#: access log keeps the route and drops the id: ``/api/webrtc/…``.
_CAPABILITY_PATH = re.compile(r"(/api/webrtc/)[^/?#\s\"']+")


def scrub(text: str) -> str:
    text = _CAPABILITY_PATH.sub(r"\1…", _QUERY_SECRET.sub(r"\1[redacted]", text))
    return _SECRET_VALUE.sub("[redacted]", text)


class ScrubFilter(logging.Filter):
    """For stdlib loggers we do not own (uvicorn logs WebSocket paths with queries)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == "ASGI callable returned without completing handshake.":
            # uvicorn's sans-I/O WebSocket protocol says this after every upgrade we
            # refuse with a denial response (401/404/409/429), which is a completed
            # answer, not a bug; every mcustt socket handler accepts or denies.
            return False
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure(level: str = "info", stream: Any = None) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (uvicorn errors, alembic) go through the same
    # level, redaction and JSON rendering; uvicorn's access log is off because it would
    # print query-string tokens. (Not basicConfig: it does nothing when the root logger
    # already has a handler, and it printed bare text lines.)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(previous)  # configured again (another app in this process)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        # Undo what uvicorn's own default logging config does when some other server in
        # this process (a test's helper, an embedding app) started with it: own handlers,
        # no propagation, its own level. Everything goes through the root handler above.
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
        if not any(isinstance(f, ScrubFilter) for f in logger.filters):
            logger.addFilter(ScrubFilter())
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
