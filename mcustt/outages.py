"""Database outages (issue 13, scenario 3): tell them apart, survive them, report them.

PostgreSQL restarts (a failover, an upgrade, a crash): for a few seconds every query
fails. What each side of the node does meanwhile:

- live sessions keep going: their finals wait in a bounded commit queue
  (:mod:`mcustt.commits`) and are persisted, then published, when the database is back;
  lease renewals and the other writes of the pipeline path are retried or skipped
  (:func:`renew_lease`, :func:`tolerated`, :meth:`StoreHealth.retry`);
- requests that need the database are refused with 503 ``STORE_UNAVAILABLE`` and
  ``Retry-After`` by one middleware (:class:`StoreGuard`): REST calls, token minting,
  and the WebSocket upgrades (ingest, subscribe) that read a session;
- :class:`StoreHealth` counts the outage once, and a probe watches for the end of it.

:func:`store_unavailable` is the one place that says which errors mean "the database
cannot be reached right now" (as opposed to a query it refused, which stays a bug).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import psycopg
import structlog
from sqlalchemy import exc as sa_exc
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from mcustt.errors import Unavailable, error_response
from mcustt.metrics import Metrics
from mcustt.wire import CloseCode, ErrorCode

log = structlog.get_logger(__name__)

#: what a refusal tells clients to wait: a restart takes a few seconds
RETRY_AFTER_S: Final = 5
#: how often the probe pings a database that is down
PROBE_S: Final = 1.0
#: how long a release of a producer claim is retried (the lease runs out after that)
RELEASE_RETRY_S: Final = 60.0


class StoreUnavailable(Unavailable):
    """The database cannot be reached: 503 ``STORE_UNAVAILABLE`` with ``Retry-After``
    (an upgrade too), or, to a producer whose finals could not be stored within
    ``MCUSTT_STORE_OUTAGE_MAX_S``, a fatal ``error`` frame and close 1013 (try again
    later: the condition is temporary and outside the session; 1011 would say the
    server itself broke)."""

    code = ErrorCode.STORE_UNAVAILABLE
    close_code = CloseCode.TRY_AGAIN_LATER


#: OperationalError: connect refused, admin shutdown, "starting up"; InterfaceError: a
#: closed connection; SQLAlchemy's TimeoutError: no pooled connection in time
_UNREACHABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def store_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is unreachable right now (down, restarting,
    the connection cut, the pool starved), looking through wrapped causes."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 5:
        if isinstance(cur, StoreUnavailable):
            return True
        if isinstance(cur, sa_exc.DBAPIError) and cur.connection_invalidated:
            return True
        if isinstance(cur, _UNREACHABLE):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def log_failure(logger: Any, event: str, exc: BaseException, **ids: Any) -> None:
    """A background loop's failed pass (call it from the ``except`` block): a one-line
    warning when the database is merely unreachable (the loop retries every second or
    so, and an outage must not fill the log with identical tracebacks), else the
    traceback."""
    if store_unavailable(exc):
        logger.warning(f"{event}: database unavailable", **ids)
    else:
        logger.exception(event, **ids)


def refusal() -> StoreUnavailable:
    return StoreUnavailable("the database is unavailable; retry shortly", retry_after=RETRY_AFTER_S)


class StoreHealth:
    """This node's view of the database: up, or down since when.

    Whoever meets an unreachable database calls :meth:`failed`: the first failure after
    the database was up counts one outage (``mcustt_store_outages_total``) and starts a
    probe that pings it every second until it answers. :meth:`wait_back` lets a retry
    loop wake as soon as it does. Work that must happen once it is back and has nobody
    waiting for it (giving up a producer claim) is handed to :meth:`retry`; those tasks
    are owned here and cancelled in :meth:`aclose`.
    """

    def __init__(self, ping: Callable[[], Awaitable[None]], metrics: Metrics | None) -> None:
        self._ping = ping
        self.metrics = metrics
        #: monotonic time of the first failure of the current outage (None: up)
        self.down_since: float | None = None
        self._back = asyncio.Event()
        self._back.set()
        self._probe: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Task[None]] = set()

    @property
    def up(self) -> bool:
        return self.down_since is None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        self._back.clear()
        if self.metrics is not None:
            self.metrics.store_outages.inc()
        log.warning("database unavailable", error=type(exc).__name__)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._watch(), name="store-probe")

    def succeeded(self) -> None:
        if self.down_since is None:
            return
        log.info("database available again", down_s=round(time.monotonic() - self.down_since, 1))
        self.down_since = None
        self._back.set()

    async def wait_back(self, seconds: float) -> None:
        """Return when the database is back, or after ``seconds``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._back.wait()

    async def _watch(self) -> None:
        while self.down_since is not None:
            await asyncio.sleep(PROBE_S)
            try:
                await self._ping()
            except Exception as exc:
                if not store_unavailable(exc):
                    log.warning("database probe failed", error=repr(exc))
                continue
            self.succeeded()

    def retry(self, what: str, attempt: Callable[[], Awaitable[object]], *, for_s: float) -> None:
        """Run ``attempt`` again whenever the database may be back, until it succeeds or
        ``for_s`` seconds have passed (in a task owned here)."""
        task = asyncio.create_task(self._retry(what, attempt, for_s), name=f"store-retry-{what}")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _retry(
        self, what: str, attempt: Callable[[], Awaitable[object]], for_s: float
    ) -> None:
        deadline = time.monotonic() + for_s
        while time.monotonic() < deadline:
            await self.wait_back(min(PROBE_S, max(0.0, deadline - time.monotonic())))
            try:
                await attempt()
            except Exception as exc:
                if not store_unavailable(exc):
                    log.warning("retried database write failed", what=what, error=repr(exc))
                    return
                self.failed(exc)
                await asyncio.sleep(0.2)  # the probe has not seen it down yet
                continue
            self.succeeded()
            return
        log.warning("gave up a database write after an outage", what=what)

    async def aclose(self) -> None:
        tasks = [t for t in (self._probe, *self._retries) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@contextlib.contextmanager
def tolerated(what: str, health: StoreHealth | None = None, **ids: Any) -> Iterator[None]:
    """Skip a write the database cannot take now (with a log line): for writes that are
    done again later anyway, so a session must not end over them."""
    try:
        yield
    except Exception as exc:
        if not store_unavailable(exc):
            raise
        if health is not None:
            health.failed(exc)
        log.warning("database unavailable: write skipped", what=what, **ids)


async def renew_lease(health: StoreHealth | None, renew: Callable[[], Awaitable[bool]]) -> bool:
    """Renew a producer lease; False when the database could not be reached (the caller
    tries again within a second, so the lease is renewed as soon as it is back)."""
    try:
        await renew()
    except Exception as exc:
        if not store_unavailable(exc):
            raise
        if health is not None:
            health.failed(exc)
        return False
    if health is not None:
        health.succeeded()
    return True


async def release_claim(
    health: StoreHealth | None, release: Callable[[], Awaitable[None]], **ids: Any
) -> None:
    """Give up a producer claim; when the database is down, retry it once it is back, so
    the producer reconnecting then is not refused 409 until the lease runs out."""
    try:
        await release()
    except Exception as exc:
        if not store_unavailable(exc):
            raise
        log.warning("database unavailable: producer claim released when it is back", **ids)
        if health is not None:
            health.failed(exc)
            health.retry("release", release, for_s=RELEASE_RETRY_S)


class StoreGuard:
    """Pure ASGI middleware: a request that failed because the database is unreachable
    is answered 503 ``STORE_UNAVAILABLE`` with ``Retry-After`` (an upgrade refused the
    same way; an accepted socket closed 1013), instead of a 500 or an abnormal close.

    The one place this mapping happens, for every route: REST, token minting, the
    sockets' admission. Inside CORS and the request context, so refusals carry their
    headers, request id and metrics.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = {"started": False, "accepted": False, "closed": False}

        async def watch(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                state["started"] = True
            elif kind == "websocket.accept":
                state["accepted"] = True
            elif kind == "websocket.close":
                state["closed"] = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            self._note(scope, exc)
            err = refusal()
            if scope["type"] == "http":
                if state["started"]:
                    raise  # too late for a status: the client sees the body cut
                await error_response(err)(scope, receive, send)
            elif state["closed"] or state["started"]:
                return
            elif state["accepted"]:
                with contextlib.suppress(Exception):
                    await send(
                        {"type": "websocket.close", "code": err.close_code, "reason": err.code}
                    )
            else:
                await WebSocket(scope, receive, send).send_denial_response(error_response(err))

    @staticmethod
    def _note(scope: Scope, exc: BaseException) -> None:
        app_state = getattr(scope["app"].state, "mcustt", None)
        if app_state is None:
            return
        app_state.metrics.store_unavailable.inc()
        health: StoreHealth | None = getattr(app_state, "store_health", None)
        if health is not None:
            health.failed(exc)
        log.warning("refused: the database is unavailable", path=scope.get("path"))
