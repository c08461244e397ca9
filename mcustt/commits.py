"""The commit queue of one track: its finals persisted in order, through database outages.

A pipeline hands each final to :meth:`CommitQueue.submit` as a *commit*: a coroutine
function that persists it (the store allocates its seq) and then publishes it (the
producer's socket and the viewers). One task per queue runs the commits one at a time,
in order. While the database is unreachable (:func:`mcustt.outages.store_unavailable`)
the commit at the head is retried with backoff, waking as soon as the node sees the
database back, and the finals made meanwhile wait behind it: recognition goes on, and
nobody is sent a final before it is stored, so "sent to anyone" still implies persisted.

Bounded twice: a commit may wait ``max_outage_s`` (``MCUSTT_STORE_OUTAGE_MAX_S``), and
at most ``max_pending`` (``MCUSTT_STORE_OUTAGE_MAX_FINALS``) may wait. Past either
bound the queue fails: the waiting finals, which nobody was sent, are dropped, and the
pipeline is told (``on_fatal``) so its producer gets a fatal ``STORE_UNAVAILABLE``.
Everything acknowledged before is stored already.

A commit that fails for another reason (a bug, a constraint) fails the queue too, as
the old inline persist failed the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog

from mcustt.errors import MCUSTTError
from mcustt.metrics import Metrics
from mcustt.outages import StoreHealth, StoreUnavailable, store_unavailable

log = structlog.get_logger(__name__)

#: A final's (or another ordered write's) persist-then-publish.
Commit = Callable[[], Awaitable[object]]

#: the first retry after a failed commit, and the longest pause between two
FIRST_RETRY_S: Final = 0.1
MAX_RETRY_S: Final = 1.0


class CommitQueue:
    """One track's ordered writes; see the module docstring.

    The task that runs them is started by :meth:`submit` and ends when the queue is
    empty (a quiet track holds no task), or is cancelled by :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        max_outage_s: float,
        max_pending: int,
        on_fatal: Callable[[MCUSTTError], None],
        health: StoreHealth | None = None,
        metrics: Metrics | None = None,
        logger: Any = None,
    ) -> None:
        self.max_outage_s = max_outage_s
        self.max_pending = max(1, max_pending)
        self.on_fatal = on_fatal
        self.health = health
        self.metrics = metrics
        self.log = logger if logger is not None else log
        self._items: deque[Commit] = deque()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        #: set while nothing is waiting, or while the database is unreachable (see
        #: :meth:`settled`)
        self._settled = asyncio.Event()
        self._settled.set()
        #: the head commit failed for want of a database and is being retried
        self.stalled = False
        #: why the queue stopped (None: it works)
        self.failure: MCUSTTError | None = None

    @property
    def pending(self) -> int:
        """Commits not finished yet (the one running included)."""
        return len(self._items)

    def submit(self, commit: Commit) -> None:
        """Queue a commit (never waits). Dropped when the queue has failed already."""
        if self.failure is not None:
            return
        if len(self._items) >= self.max_pending:
            self._fail(
                StoreUnavailable(
                    f"the database is unavailable and {len(self._items)} finals are waiting "
                    "for it, the most this node keeps; they were not stored. Reconnect "
                    "when the service is back"
                )
            )
            return
        self._items.append(commit)
        self._gauge(1)
        self._idle.clear()
        if not self.stalled:
            self._settled.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="commits")

    async def settled(self) -> None:
        """Wait until what was submitted is done, or until the database is found
        unreachable (then it waits in the queue and the caller goes on). While the
        database answers, a final is thus stored and sent before its track goes on, as
        when it was persisted inline."""
        await self._settled.wait()

    async def drain(self) -> None:
        """Wait until every commit submitted so far is done.

        Raises:
            MCUSTTError: the queue failed (``STORE_UNAVAILABLE`` after an outage past
                its bounds): what was waiting was dropped.
        """
        await self._idle.wait()
        if self.failure is not None:
            raise self.failure

    async def aclose(self) -> None:
        """Stop at once (an aborted pipeline): what is waiting is dropped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._drop()

    # -- the task ----------------------------------------------------------------------

    async def _run(self) -> None:
        while self._items:
            try:
                await self._commit(self._items[0])
            except MCUSTTError as exc:
                self._fail(exc)
                return
            self._items.popleft()
            self._gauge(-1)
        self._idle.set()
        self._settled.set()

    async def _commit(self, commit: Commit) -> None:
        """Run one commit, again and again while the database is unreachable."""
        since: float | None = None
        delay = FIRST_RETRY_S
        while True:
            try:
                await commit()
            except Exception as exc:
                if not store_unavailable(exc):
                    self.log.exception("storing a final failed")
                    raise MCUSTTError(f"storing a final failed ({type(exc).__name__})") from exc
                now = time.monotonic()
                if since is None:
                    since = now
                    self.stalled = True
                    self._settled.set()
                    self.log.warning(
                        "database unavailable: finals wait for it",
                        pending=len(self._items),
                        max_wait_s=self.max_outage_s,
                    )
                if self.health is not None:
                    self.health.failed(exc)
                left = since + self.max_outage_s - now
                if left <= 0:
                    raise StoreUnavailable(
                        f"the database was unavailable for more than {self.max_outage_s:g} s; "
                        f"{len(self._items)} finals could not be stored and were not sent. "
                        "Reconnect when the service is back"
                    ) from exc
                # Woken early when the node's probe sees the database back.
                pause = min(delay, left)
                if self.health is not None:
                    await self.health.wait_back(pause)
                    # the probe may have cleared the outage while this commit's
                    # connection attempt was still failing: never spin
                    await asyncio.sleep(min(FIRST_RETRY_S, pause))
                else:
                    await asyncio.sleep(pause)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            if since is not None:
                self.stalled = False
                self.log.info(
                    "database back: waiting finals are being stored",
                    waited_s=round(time.monotonic() - since, 1),
                    pending=len(self._items),
                )
            if self.health is not None:
                self.health.succeeded()
            return

    def _fail(self, exc: MCUSTTError) -> None:
        if self.failure is None:
            self.failure = exc
            self.log.error(
                "finals could not be stored: the producer is disconnected",
                code=exc.code,
                dropped=len(self._items),
            )
            self._drop()
            task = self._task
            if task is not None and task is not asyncio.current_task():
                # (full while the head commit retries) nothing more is committed
                task.cancel()
            self.on_fatal(exc)
        self._idle.set()

    def _drop(self) -> None:
        self._gauge(-len(self._items))
        self._items.clear()
        self._idle.set()
        self._settled.set()

    def _gauge(self, n: int) -> None:
        if self.metrics is not None and n:
            self.metrics.finals_buffered.inc(n)
