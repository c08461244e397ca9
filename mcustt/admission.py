"""Admission control (issue 13): whether this node takes a new producer or viewer.

A node refuses *new* work, never the work it has: the sessions it already serves keep
their latency, and a producer that is refused goes to another node (behind a load
balancer, its retry lands elsewhere; the Python client's producer tries its next URL).
Refusals are 503 with ``Retry-After`` in the contract's envelope (§15: "503 Capacity"),
or the same as an upgrade refusal on a socket:

* ``NODE_DRAINING``: the node got SIGTERM (:mod:`mcustt.drain`): producers, viewers,
  new sessions and ``/readyz`` (status ``draining``) all say so;
* ``NODE_OVERLOADED``: new producers only, when the node has
  ``MCUSTT_MAX_PRODUCERS_PER_NODE`` producers already, or it is saturated: its event
  loop lags more than ``MCUSTT_MAX_LOOP_LAG_MS`` (p90 of the last 2 s), its event-loop
  thread is busy more than ``MCUSTT_MAX_LOOP_BUSY`` of the time (the last 1 s), or its
  recognizer's backlog (:meth:`mcustt.recognizers.Recognizer.load`, p90 of the last
  2 s) is above ``MCUSTT_MAX_RECOGNIZER_LOAD``.

Its own codes rather than ``UNAVAILABLE`` (a dependency is down: another node would not
do better) or ``INGEST_CAP`` (429, the tenant's cap: the same anywhere): these two say
*this node* cannot, so trying another node at once is the right move.

The lag monitor is one task (owned by :func:`mcustt.state.open_state`) sampling every
50 ms how late its own timer fires (whatever delays it delays every socket's frames) and
how much CPU the loop's thread used meanwhile. Lag alone is a late signal: a loop that
serves one more socket than it can still fires its timers nearly on time (each turn of
the loop gets longer, not the queue of turns), while the sockets' own frames pile up in
kernel buffers; the thread's busy share rises before that happens, so it refuses while
the sessions it has are still on time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import structlog

from mcustt.config import Settings
from mcustt.errors import Unavailable
from mcustt.metrics import Metrics
from mcustt.recognizers import Recognizer
from mcustt.wire import CloseCode, ErrorCode

log = structlog.get_logger(__name__)

#: how often the monitor samples the loop's lag and the recognizer's load
SAMPLE_S: Final = 0.05
#: samples kept: the last 2 s (a single pause, a GC or a slow query, does not refuse)
WINDOW: Final = 40
#: busy samples averaged: the last 1 s (a step of new producers shows within a second)
BUSY_WINDOW: Final = 20
#: Retry-After of a draining node: the producer should go elsewhere at once
DRAIN_RETRY_AFTER_S: Final = 1
#: Retry-After of an overloaded node: time for its load to fall (or a balancer to move on)
OVERLOAD_RETRY_AFTER_S: Final = 5


class NodeDraining(Unavailable):
    """This node is shutting down (SIGTERM): 503 ``NODE_DRAINING`` before an upgrade;
    on a producer's open socket an ``error`` frame with this code, then close 1012."""

    code = ErrorCode.NODE_DRAINING
    close_code = CloseCode.SERVICE_RESTART


class NodeOverloaded(Unavailable):
    """This node is saturated or at its producer cap: 503 ``NODE_OVERLOADED``."""

    code = ErrorCode.NODE_OVERLOADED


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Gate:
    """The node's admission decisions and the monitor that feeds them."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        recognizer: Recognizer,
        producers: Callable[[], int],
        *,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.settings = settings
        #: the event loop thread's CPU seconds (the monitor runs on that thread)
        self.cpu_clock = cpu_clock
        self.metrics = metrics
        self.recognizer = recognizer
        #: how many producers (tracks) this node serves now
        self.producers = producers
        #: set once by :meth:`start_draining`; never cleared (the process exits)
        self.draining = False
        self._lags: deque[float] = deque(maxlen=WINDOW)
        self._loads: deque[float] = deque(maxlen=WINDOW)
        self._busy: deque[float] = deque(maxlen=BUSY_WINDOW)
        #: when the last producers were admitted (loop time, :meth:`expect_producer`)
        self._admitted: deque[float] = deque(maxlen=1024)

    # -- the figures -------------------------------------------------------------------

    @property
    def loop_lag_s(self) -> float:
        """The event loop's lag: p90 of the last 2 s of samples."""
        return percentile(list(self._lags), 90)

    @property
    def loop_busy(self) -> float:
        """The share of the last 1 s the event loop's thread spent on the CPU."""
        return sum(self._busy) / len(self._busy) if self._busy else 0.0

    @property
    def projected_busy(self) -> float:
        """:attr:`loop_busy` plus what the producers admitted within its window will add
        once they stream (at today's cost per producer): a burst of connects is admitted
        up to the limit, not past it because the monitor has not seen them yet."""
        busy = self.loop_busy
        now = asyncio.get_running_loop().time()
        while self._admitted and now - self._admitted[0] > BUSY_WINDOW * SAMPLE_S:
            self._admitted.popleft()
        producers = self.producers()
        if not self._admitted or not producers:
            return busy
        return busy + busy / producers * min(len(self._admitted), producers)

    @property
    def recognizer_load(self) -> float | None:
        """The recognizer's backlog, p90 of the last 2 s (None: it reports none).

        Not the median: a saturated engine's backlog drains in short dips between
        utterances, and a producer admitted in one of them finds it saturated again."""
        if not self._loads:
            return None
        return percentile(list(self._loads), 90)

    def overload(self) -> str | None:
        """Why a new producer would be refused now (a metric label), or None."""
        s = self.settings
        if s.max_producers_per_node and self.producers() >= s.max_producers_per_node:
            return "producer_cap"
        if s.max_loop_lag_ms and self.loop_lag_s * 1000 > s.max_loop_lag_ms:
            return "loop_lag"
        if s.max_loop_busy and self.projected_busy > s.max_loop_busy:
            return "loop_busy"
        load = self.recognizer_load
        if s.max_recognizer_load and load is not None and load > s.max_recognizer_load:
            return "recognizer_load"
        return None

    # -- decisions -----------------------------------------------------------------------

    def start_draining(self) -> bool:
        """Stop admitting (idempotent); True the first time."""
        if self.draining:
            return False
        self.draining = True
        self.metrics.drains.inc()
        self.metrics.draining.set(1)
        return True

    def _refuse_if_draining(self, what: str) -> None:
        if self.draining:
            self.metrics.admissions_refused.labels("draining").inc()
            raise NodeDraining(
                f"this node is shutting down; {what} on another node",
                retry_after=DRAIN_RETRY_AFTER_S,
            )

    def admit_producer(self) -> None:
        """Before any other work on a producer's upgrade (``/ws/stt``, WHIP, the
        compatible stream, the Jitsi bridge).

        Raises:
            NodeDraining: the node is draining.
            NodeOverloaded: at the producer cap, or saturated.
        """
        self._refuse_if_draining("connect")
        reason = self.overload()
        if reason is not None:
            self.metrics.admissions_refused.labels(reason).inc()
            log.warning(
                "producer refused: node overloaded",
                reason=reason,
                producers=self.producers(),
                loop_lag_ms=round(self.loop_lag_s * 1000, 1),
                loop_busy=round(self.loop_busy, 2),
                recognizer_load=self.recognizer_load,
            )
            raise NodeOverloaded(
                f"this node is at capacity ({reason.replace('_', ' ')}); connect to another "
                "node or retry later",
                retry_after=OVERLOAD_RETRY_AFTER_S,
            )

    def expect_producer(self) -> None:
        """A producer passed :meth:`admit_producer` and the per-IP rate limits (so a
        flood of bad attempts cannot inflate it): count it in :attr:`projected_busy`."""
        self._admitted.append(asyncio.get_running_loop().time())

    def admit_viewer(self) -> None:
        """Before a viewer's upgrade or event stream: refused only while draining (a
        viewer costs little; one refused here resumes elsewhere with its last seq).

        Raises:
            NodeDraining: the node is draining.
        """
        self._refuse_if_draining("subscribe")

    def admit_session(self) -> None:
        """Before creating a session.

        Raises:
            NodeDraining: the node is draining.
        """
        self._refuse_if_draining("create it")

    # -- the monitor ---------------------------------------------------------------------

    async def run(self) -> None:
        """Sample the loop's lag, its thread's CPU and the recognizer's load until
        cancelled (this task runs on the loop's thread, so ``thread_time`` is its CPU)."""
        loop = asyncio.get_running_loop()
        m = self.metrics
        tick = 0
        while True:
            before, cpu_before = loop.time(), self.cpu_clock()
            await asyncio.sleep(SAMPLE_S)
            elapsed = loop.time() - before
            lag = max(0.0, elapsed - SAMPLE_S)
            self._lags.append(lag)
            self._busy.append(min(1.0, (self.cpu_clock() - cpu_before) / elapsed))
            load = self.recognizer.load()
            if load is not None:
                self._loads.append(load)
            tick += 1
            if tick % 10 == 0:  # twice a second is plenty for a scrape
                m.loop_lag.set(self.loop_lag_s)
                m.loop_busy.set(self.loop_busy)
                if (load := self.recognizer_load) is not None:
                    m.recognizer_load.set(load)
