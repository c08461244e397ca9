"""The sphinx worker pool, in the server process: spawn, route, bound, watch, replace.

pocketsphinx holds the GIL while it decodes, so threads would give no parallelism and
would stall the event loop: every decoder lives in a worker process (``worker.py``).
Each worker multiplexes many utterances over one duplex pipe. The event loop reads
replies with ``loop.add_reader`` and never blocks on a worker:

* routing: an utterance is pinned to the least-loaded live worker for its whole life;
  replies are dispatched to it by utterance id (:class:`Utterance`);
* flow control: every "audio" gets exactly one "ack", which bounds the bytes in flight
  per worker (``MAX_INFLIGHT_BYTES``) and so guarantees that ``Connection.send`` in the
  event loop never blocks on a full socket buffer;
* supervision: a worker that dies (EOF, exit) or owes replies for too long (hung) is
  killed, its utterances fail with a fatal :class:`RecognizerError`, and it is
  respawned, with backoff when it keeps dying young.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import time
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final, Protocol

import structlog

from mcustt.recognizers.base import RecognizerError
from mcustt.recognizers.sphinx.worker import MODEL, WorkerStats, worker_main

log = structlog.get_logger(__name__)

#: Unacknowledged audio per worker. A Unix socketpair buffers ~200 KB of skb truesize
#: (~150 KB of 6.4 KB payloads); staying well below it means a send never blocks the loop.
#: It is also ~2 s of audio, the most a busy worker can fall behind before feed() waits.
MAX_INFLIGHT_BYTES: Final = 64 * 1024
#: Idle decoders a worker keeps (at least; MCUSTT_SPHINX_DECODERS if more). More are
#: built when more utterances overlap, and the surplus is dropped when they end so a
#: burst does not pin ~100 MB per decoder forever (though the allocator may keep the
#: pages: a worker's RSS is its peak).
MAX_IDLE_DECODERS: Final = 4
READY_TIMEOUT_S: Final = 60.0
#: ... plus this per decoder built before "ready" (~0.6 s each on an idle core)
READY_TIMEOUT_PER_DECODER_S: Final = 5.0
#: How long a stream waits for a worker to be (re)started before giving up.
ACQUIRE_TIMEOUT_S: Final = 15.0
#: A worker that owes replies and says nothing for this long is hung: it is killed.
STALL_TIMEOUT_S: Final = 30.0
WATCHDOG_INTERVAL_S: Final = 5.0
#: A worker that dies younger than this counts as crash-looping and is restarted with
#: exponential backoff (0.5 s doubling up to RESPAWN_MAX_DELAY_S).
STABLE_AFTER_S: Final = 30.0
RESPAWN_MAX_DELAY_S: Final = 30.0
STOP_TIMEOUT_S: Final = 5.0


class Utterance(Protocol):
    """What the pool needs of a stream pinned to a worker: where its replies go."""

    def on_ack(self, nbytes: int, text: str | None, error: str | None) -> None:
        """The worker decoded ``nbytes`` more audio; ``text`` is its hypothesis so far."""

    def on_final(
        self, text: str | None, error: str | None, words: tuple[tuple[str, int, int], ...] = ()
    ) -> None:
        """The worker ended the utterance; ``words``: (word, start_ms, end_ms) each."""

    def on_fail(self, error: RecognizerError) -> None:
        """The worker is gone (or the pool is shutting down)."""


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, index: int, process: BaseProcess, conn: Connection) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        # Kept as ints: once conn is closed its fileno() raises, and readers must go.
        self.fd = conn.fileno()
        self.sentinel = process.sentinel
        self.pid = process.pid or 0
        self.started_at = time.monotonic()
        self.alive = True
        self.utterances: dict[int, Utterance] = {}
        self.inflight_bytes = 0
        self.outstanding = 0  # replies owed
        self.waiting_since = self.started_at  # last reply, or when replies became owed
        self.space = asyncio.Event()
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.stats_waiters: dict[int, asyncio.Future[WorkerStats]] = {}

    def owe(self) -> None:
        """One more reply is due (the watchdog times the oldest)."""
        if self.outstanding == 0:
            self.waiting_since = time.monotonic()
        self.outstanding += 1

    def paid(self) -> None:
        self.outstanding = max(0, self.outstanding - 1)
        self.waiting_since = time.monotonic()

    def load(self) -> tuple[int, int]:
        return (len(self.utterances), self.inflight_bytes)

    def has_room(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more audio stays within the unacknowledged bound (an idle
        worker always takes one batch, however large)."""
        return not self.inflight_bytes or self.inflight_bytes + nbytes <= MAX_INFLIGHT_BYTES

    async def wait_for_room(self, nbytes: int) -> None:
        """Until :meth:`has_room`, or the worker is gone."""
        while self.alive and not self.has_room(nbytes):
            self.space.clear()
            await self.space.wait()


class WorkerPool:
    """``size`` worker processes, started by :meth:`start` and kept at that size."""

    def __init__(self, size: int, *, decoders: int = 1) -> None:
        # The server has threads and an event loop: forking it could copy held locks.
        self._ctx = multiprocessing.get_context("spawn")
        self._size = size
        #: decoders each worker builds before "ready" (MCUSTT_SPHINX_DECODERS)
        self._decoders = decoders
        self._slots: list[Worker | None] = []
        self._quick_deaths: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._requests = itertools.count(1)
        self._worker_up: asyncio.Event | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._closed:
            raise RecognizerError("sphinx recognizer was closed")
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._worker_up = asyncio.Event()
        self._slots = [None] * self._size
        self._quick_deaths = [0] * self._size
        self._running = True
        try:
            workers = [self._spawn(i) for i in range(self._size)]
            async with asyncio.timeout(
                READY_TIMEOUT_S + READY_TIMEOUT_PER_DECODER_S * self._decoders
            ):
                pids = [await w.ready for w in workers]
        except BaseException as exc:
            log.error("sphinx_pool_start_failed", error=repr(exc))
            await self.aclose()
            if isinstance(exc, TimeoutError):
                raise RecognizerError("sphinx workers did not start in time") from exc
            raise
        self._own(self._watchdog(), "sphinx-watchdog")
        log.info("sphinx_pool_started", workers=self._size, pids=pids, model=MODEL)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._running = False
        if self._worker_up is not None:
            self._worker_up.set()  # streams waiting for a worker see the pool is gone
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        workers = [w for w in self._slots if w is not None]
        self._slots = [None] * len(self._slots)
        error = RecognizerError("the speech recognizer is shutting down", fatal=True)
        for worker in workers:
            self._detach(worker, error)
            with contextlib.suppress(OSError):
                worker.conn.send(("stop",))
            worker.conn.close()
        await _reap([w.process for w in workers], STOP_TIMEOUT_S)
        log.info("sphinx_pool_stopped", workers=len(workers))

    def check(self) -> None:
        if not self._running:
            raise RecognizerError("the sphinx worker pool is not running")
        if not any(w is not None and w.alive for w in self._slots):
            raise RecognizerError("no sphinx worker is alive")
        if not any(w is not None and w.alive and _booted(w) for w in self._slots):
            # A (re)started worker builds its first decoder before it says "ready".
            raise RecognizerError("no sphinx worker is ready yet")

    def load(self) -> float:
        """The backlog of the least-busy live worker, as a share of what it may owe
        (:data:`MAX_INFLIGHT_BYTES`, ~2 s of audio): a new utterance goes to that worker
        (:meth:`acquire`), so when even it is near its bound, every worker is behind
        real time. 1.0 when no worker is alive."""
        live = [w for w in self._slots if w is not None and w.alive]
        if not live:
            return 1.0
        return min(w.inflight_bytes for w in live) / MAX_INFLIGHT_BYTES

    async def stats(self) -> list[WorkerStats]:
        """Decoder counters of every live worker."""
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[WorkerStats]] = []
        for worker in self._slots:
            if worker is None or not worker.alive:
                continue
            req = next(self._requests)
            try:
                self._send(worker, ("stats", req))
            except RecognizerError:
                continue  # already logged and being replaced
            fut: asyncio.Future[WorkerStats] = loop.create_future()
            worker.stats_waiters[req] = fut
            worker.owe()
            waits.append(fut)
        async with asyncio.timeout(STALL_TIMEOUT_S):
            return list(await asyncio.gather(*waits))

    # ----------------------------------------------------------------- utterances

    async def acquire(self) -> Worker:
        """The least-loaded live worker, waiting a while if all are being restarted."""
        deadline = time.monotonic() + ACQUIRE_TIMEOUT_S
        while True:
            if not self._running:
                raise RecognizerError("the sphinx worker pool is not running", fatal=True)
            live = [w for w in self._slots if w is not None and w.alive]
            if live:
                return min(live, key=Worker.load)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RecognizerError("no sphinx worker is available", fatal=True)
            assert self._worker_up is not None
            self._worker_up.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._worker_up.wait()

    def begin(self, worker: Worker, uid: int, utterance: Utterance) -> None:
        """Pin ``utterance`` to ``worker``: its replies go there from now on."""
        worker.utterances[uid] = utterance
        self._send(worker, ("start", uid))

    def audio(self, worker: Worker, uid: int, pcm: bytes) -> None:
        """Ship audio without waiting; the caller has checked :meth:`Worker.has_room`."""
        self._send(worker, ("audio", uid, pcm))
        worker.inflight_bytes += len(pcm)
        worker.owe()

    def end(self, worker: Worker, uid: int) -> None:
        """No more audio: the worker replies with the final."""
        self._send(worker, ("end", uid))
        worker.owe()

    def abort(self, worker: Worker, uid: int, utterance: Utterance) -> None:
        """Drop an utterance; its decoder goes back to the worker's free-list."""
        if worker.alive and worker.utterances.pop(uid, None) is utterance:
            with contextlib.suppress(RecognizerError):
                self._send(worker, ("abort", uid))

    # ----------------------------------------------------------------- workers

    def _spawn(self, index: int) -> Worker:
        loop = asyncio.get_running_loop()
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main,
            args=(child_conn, index, max(MAX_IDLE_DECODERS, self._decoders), self._decoders),
            name=f"mcustt-sphinx-{index}",
            daemon=True,  # never outlive the server, even if aclose() is skipped
        )
        try:
            # Synchronous on purpose: spawn is a vfork+exec (~1 ms), cheaper than a
            # thread hop, and multiprocessing's child bookkeeping is not thread-safe.
            process.start()
        finally:
            # The parent must drop its copy, or the worker's death would not read as EOF.
            child_conn.close()
        worker = Worker(index, process, parent_conn)
        loop.add_reader(worker.fd, self._on_readable, worker)
        loop.add_reader(worker.sentinel, self._on_exit, worker)
        self._slots[index] = worker
        assert self._worker_up is not None
        self._worker_up.set()
        log.debug("sphinx_worker_spawned", index=index, pid=worker.pid)
        return worker

    def _on_readable(self, worker: Worker) -> None:
        # Level-triggered: a bounded drain keeps one chatty worker from starving the loop.
        # recv() could block on a partial message, but replies are small and written in
        # one send, so a readable socket holds whole messages in practice.
        for _ in range(64):
            if not worker.alive:
                return
            try:
                if not worker.conn.poll():
                    return
                msg = worker.conn.recv()
            except (EOFError, OSError) as exc:
                self._lose(worker, f"connection lost ({type(exc).__name__})")
                return
            except Exception as exc:
                log.exception("sphinx_worker_garbled_reply", index=worker.index, pid=worker.pid)
                self._lose(worker, f"garbled reply ({type(exc).__name__})")
                return
            try:
                self._dispatch(worker, msg)
            except Exception:
                log.exception("sphinx_dispatch_failed", index=worker.index, kind=msg[0])

    def _on_exit(self, worker: Worker) -> None:
        # Normally EOF on the pipe comes first; this covers a pipe held open elsewhere.
        self._lose(worker, "process exited")

    def _dispatch(self, worker: Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "ack":
            _, uid, nbytes, text, error = msg
            worker.paid()
            worker.inflight_bytes -= nbytes
            worker.space.set()
            utterance = worker.utterances.get(uid)
            if utterance is not None:
                utterance.on_ack(nbytes, text, error)
        elif kind == "final":
            _, uid, text, error, words = msg  # words: issue 17 (see worker.py)
            worker.paid()
            utterance = worker.utterances.pop(uid, None)
            if utterance is not None:
                utterance.on_final(text, error, words)
        elif kind == "stats":
            _, req, stats = msg
            worker.paid()
            fut = worker.stats_waiters.pop(req, None)
            if fut is not None and not fut.done():
                fut.set_result(stats)
        elif kind == "ready":
            if not worker.ready.done():
                worker.ready.set_result(msg[1])
        elif kind == "fatal":
            log.error("sphinx_worker_boot_failed", index=worker.index, error=msg[1])
            if not worker.ready.done():
                worker.ready.set_exception(RecognizerError(f"sphinx worker failed: {msg[1]}"))
                worker.ready.exception()  # a respawned worker's readiness is never awaited
            self._lose(worker, f"boot failed: {msg[1]}")
        else:
            log.error("sphinx_worker_bad_reply", index=worker.index, kind=kind)

    def _send(self, worker: Worker, msg: tuple[Any, ...]) -> None:
        """Send or, if the pipe is broken, declare the worker lost (then raise)."""
        try:
            worker.conn.send(msg)
        except (OSError, ValueError) as exc:
            self._lose(worker, f"send failed ({type(exc).__name__})")
            raise RecognizerError(f"sphinx worker {worker.index} is gone", fatal=True) from exc

    def _detach(self, worker: Worker, error: RecognizerError) -> None:
        """Stop watching a worker and fail everything that waits on it."""
        if not worker.alive:
            return
        worker.alive = False
        loop = self._loop
        if loop is not None:
            loop.remove_reader(worker.fd)
            loop.remove_reader(worker.sentinel)
        utterances = list(worker.utterances.values())
        worker.utterances.clear()
        for utterance in utterances:
            utterance.on_fail(error)
        for fut in worker.stats_waiters.values():
            if not fut.done():
                fut.set_exception(error)
        worker.stats_waiters.clear()
        if not worker.ready.done():
            worker.ready.set_exception(error)
            worker.ready.exception()  # retrieved: nobody may be awaiting it
        worker.space.set()  # wakes feed() calls waiting for room; they see alive=False

    def _lose(self, worker: Worker, reason: str) -> None:
        """A worker died or misbehaved: fail its streams, kill it, schedule a new one."""
        if not worker.alive:
            return
        n_streams = len(worker.utterances)
        self._detach(
            worker,
            RecognizerError(
                f"speech recognizer worker {worker.index} (pid {worker.pid}) failed: {reason}",
                fatal=True,
            ),
        )
        worker.conn.close()
        if worker.process.exitcode is None:
            worker.process.kill()
        log.error(
            "sphinx_worker_lost",
            index=worker.index,
            pid=worker.pid,
            reason=reason,
            failed_streams=n_streams,
            uptime_s=round(time.monotonic() - worker.started_at, 1),
        )
        if self._slots[worker.index] is worker:
            self._slots[worker.index] = None
        if self._running and not self._closed:
            self._own(self._respawn(worker), f"sphinx-respawn-{worker.index}")

    async def _respawn(self, dead: Worker) -> None:
        await _reap([dead.process], STOP_TIMEOUT_S)
        index = dead.index
        if time.monotonic() - dead.started_at < STABLE_AFTER_S:
            self._quick_deaths[index] += 1
        else:
            self._quick_deaths[index] = 0
        log.warning(
            "sphinx_worker_exited", index=index, pid=dead.pid, exitcode=dead.process.exitcode
        )
        while not self._closed:
            n = self._quick_deaths[index]
            delay = 0.0 if n == 0 else min(RESPAWN_MAX_DELAY_S, 0.5 * 2 ** (n - 1))
            log.warning("sphinx_worker_respawning", index=index, delay_s=delay)
            await asyncio.sleep(delay)
            try:
                worker = self._spawn(index)
            except Exception:
                # e.g. EAGAIN from fork under memory pressure: keep trying, ever slower.
                log.exception("sphinx_worker_spawn_failed", index=index)
                self._quick_deaths[index] += 1
                continue
            log.warning("sphinx_worker_replaced", index=index, pid=worker.pid)
            return

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            now = time.monotonic()
            for worker in list(self._slots):
                if (
                    worker is not None
                    and worker.alive
                    and worker.outstanding > 0
                    and now - worker.waiting_since > STALL_TIMEOUT_S
                ):
                    self._lose(worker, f"no reply for {STALL_TIMEOUT_S:.0f} s (hung)")

    def _own(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "sphinx_background_task_failed", task=task.get_name(), error=repr(task.exception())
            )


async def _reap(processes: list[BaseProcess], grace_s: float) -> None:
    """Wait for processes to exit without blocking the loop; escalate if they do not."""
    for action in ("terminate", "kill", None):
        pending = await _wait_exit(processes, grace_s)
        if not pending:
            return
        if action is None:
            log.error("sphinx_worker_unreaped", pids=[p.pid for p in pending])
            return
        log.warning("sphinx_worker_" + action, pids=[p.pid for p in pending])
        for p in pending:
            getattr(p, action)()
        grace_s = 2.0


async def _wait_exit(processes: list[BaseProcess], limit_s: float) -> list[BaseProcess]:
    """The processes still running after up to ``limit_s``."""
    pending = [p for p in processes if p.exitcode is None]
    if not pending:
        return []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    exits: list[asyncio.Future[None]] = []
    for p in pending:
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_reader(p.sentinel, _resolve, fut)
        exits.append(fut)
    try:
        await asyncio.wait(exits, timeout=limit_s)
    finally:
        for p in pending:
            loop.remove_reader(p.sentinel)
    # The sentinel turns readable as the child closes its fds, a moment before the
    # kernel lets it be reaped (longer on a loaded host): give that moment.
    # No fd or event marks "now reapable", hence the short polling.
    for _ in range(max(0, int((deadline - loop.time()) / 0.01))):
        if all(p.exitcode is not None for p in pending):
            break
        await asyncio.sleep(0.01)
    return [p for p in pending if p.exitcode is None]


def _booted(worker: Worker) -> bool:
    ready = worker.ready
    return ready.done() and not ready.cancelled() and ready.exception() is None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
