"""Offline English recognition with pocketsphinx, decoded in a pool of worker processes.

pocketsphinx holds the GIL while it decodes, so threads would give no parallelism and
would stall the event loop: every decoder lives in a worker process instead. Each worker
multiplexes many utterances over one duplex pipe. Requests carry an utterance id; the
event loop reads replies with ``loop.add_reader`` and never blocks on a worker.

A Decoder costs ~100 MB and ~0.6 s to build, so each worker keeps a small free-list of
them (built lazily) and pins an utterance to one decoder only while the utterance lasts.

Wire protocol (tuples pickled over the pipe)::

    parent -> worker                     worker -> parent
    ("start", uid)                       (nothing unless it fails: see "ack"/"final")
    ("audio", uid, pcm)                  ("ack", uid, nbytes, hyp_text | None, error | None)
    ("end", uid)                         ("final", uid, text | None, error | None)
    ("abort", uid)                       (nothing)
    ("stats", req)                       ("stats", req, WorkerStats)
    ("stop",)                            (exits)
                                         ("ready", pid) once at boot, or ("fatal", message)

Every "audio" gets exactly one "ack", which is what bounds the bytes in flight per
worker (see ``MAX_INFLIGHT_BYTES``) and so guarantees that ``Connection.send`` in the
event loop never blocks on a full socket buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import signal
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, ClassVar, Final, TypedDict

import structlog

from mcustt.config import Settings
from mcustt.recognizers.base import Hypothesis, Recognizer, RecognizerError, RecognizerStream

log = structlog.get_logger(__name__)

LANG: Final = "en-US"
MODEL: Final = "pocketsphinx-en-us"
BYTES_PER_MS: Final = 32  # 16 kHz x 2 bytes, mono
#: Audio is shipped in batches of this size: each batch gives one interim, so interims
#: come every 200 ms of audio, comfortably inside the 300 ms promise.
BATCH_BYTES: Final = 200 * BYTES_PER_MS
#: Unacknowledged audio per worker. A Unix socketpair buffers ~200 KB of skb truesize
#: (~150 KB of 6.4 KB payloads); staying well below it means a send never blocks the loop.
#: It is also ~2 s of audio, the most a busy worker can fall behind before feed() waits.
MAX_INFLIGHT_BYTES: Final = 64 * 1024
#: Idle decoders a worker keeps. More are built when more utterances overlap, and the
#: surplus is dropped when they end so a burst does not pin ~100 MB per decoder forever.
MAX_IDLE_DECODERS: Final = 4
#: Interims a slow consumer may leave unread; older ones are dropped (a later interim
#: replaces them anyway). Finals and errors are kept outside this bound.
MAX_QUEUED_INTERIMS: Final = 32
#: pocketsphinx options: without the second (fwdflat) and lattice (bestpath) passes
#: end_utt takes ~15 ms instead of 150-400 ms, at about the same accuracy.
DECODER_OPTIONS: Final[dict[str, Any]] = {
    "samprate": 16000,
    "fwdflat": False,
    "bestpath": False,
    "loglevel": "FATAL",
}
READY_TIMEOUT_S: Final = 60.0
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


class WorkerStats(TypedDict):
    index: int
    pid: int
    active: int  # utterances holding a decoder now
    idle: int  # decoders in the free-list
    created: int  # decoders ever built by this worker
    peak_active: int  # most utterances that held a decoder at once
    utterances: int  # utterances started


# --------------------------------------------------------------------------- worker side


def _worker_main(conn: Connection, index: int, max_idle: int) -> None:
    """Entry point of a worker process (spawned, so it imports this module afresh)."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop,
    # otherwise a shutdown would look like a crash of every worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _WorkerLoop(conn, index, max_idle).run()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away; nobody is left to tell
    except BaseException:
        log.exception("sphinx_worker_failed", index=index, pid=os.getpid())
        raise


class _WorkerLoop:
    def __init__(self, conn: Connection, index: int, max_idle: int) -> None:
        self.conn = conn
        self.index = index
        self.max_idle = max_idle
        self.free: list[Any] = []
        self.active: dict[int, Any] = {}
        self.created = 0
        self.peak_active = 0
        self.utterances = 0
        self.decoder_cls: Any = None

    def run(self) -> None:
        try:
            # Imported here so the server process does not load pocketsphinx at all.
            from pocketsphinx import Decoder, get_model_path

            model_dir = os.path.join(get_model_path(), "en-us")
            if not os.path.isdir(model_dir):
                raise FileNotFoundError(f"pocketsphinx model not found at {model_dir}")
        except Exception as exc:
            self.conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
            return
        self.decoder_cls = Decoder
        self.conn.send(("ready", os.getpid()))
        while True:
            msg = self.conn.recv()
            kind = msg[0]
            if kind == "audio":
                self.audio(msg[1], msg[2])
            elif kind == "start":
                self.start(msg[1])
            elif kind == "end":
                self.end(msg[1])
            elif kind == "abort":
                self.abort(msg[1])
            elif kind == "stats":
                self.conn.send(("stats", msg[1], self.stats()))
            elif kind == "stop":
                return
            else:
                log.error("sphinx_worker_bad_request", index=self.index, kind=kind)

    def start(self, uid: int) -> None:
        try:
            decoder = self.free.pop() if self.free else self._new_decoder()
            decoder.start_utt()
        except Exception as exc:
            # No reply of its own: the stream learns it from its first ack or its final.
            self.active[uid] = _Failed(_describe(exc))
            return
        self.active[uid] = decoder
        self.utterances += 1
        self.peak_active = max(self.peak_active, self._n_active())

    def audio(self, uid: int, pcm: bytes) -> None:
        decoder = self.active.get(uid)
        text: str | None = None
        error: str | None = None
        if isinstance(decoder, _Failed):
            error = decoder.error
            del self.active[uid]
        elif decoder is not None:  # None: aborted or failed earlier; the ack still counts
            try:
                decoder.process_raw(pcm, False, False)
                hyp = decoder.hyp()
                text = hyp.hypstr if hyp is not None else None
            except Exception as exc:
                # Its state is unknown now: never reuse it.
                del self.active[uid]
                error = _describe(exc)
        self.conn.send(("ack", uid, len(pcm), text, error))

    def end(self, uid: int) -> None:
        decoder = self.active.pop(uid, None)
        text: str | None = None
        error: str | None = None
        if isinstance(decoder, _Failed):
            error = decoder.error
        elif decoder is not None:
            try:
                decoder.end_utt()
                hyp = decoder.hyp()
                text = hyp.hypstr if hyp is not None else None
            except Exception as exc:
                error = _describe(exc)
            else:
                self._release(decoder)
        self.conn.send(("final", uid, text, error))

    def abort(self, uid: int) -> None:
        decoder = self.active.pop(uid, None)
        if decoder is None or isinstance(decoder, _Failed):
            return
        try:
            decoder.end_utt()
        except Exception:
            log.exception("sphinx_worker_abort_failed", index=self.index, uid=uid)
        else:
            self._release(decoder)

    def stats(self) -> WorkerStats:
        return WorkerStats(
            index=self.index,
            pid=os.getpid(),
            active=self._n_active(),
            idle=len(self.free),
            created=self.created,
            peak_active=self.peak_active,
            utterances=self.utterances,
        )

    def _new_decoder(self) -> Any:
        decoder = self.decoder_cls(**DECODER_OPTIONS)
        self.created += 1
        return decoder

    def _release(self, decoder: Any) -> None:
        # The reused decoder keeps its live cepstral-mean estimate: on the test voices
        # that lowers WER (0.90 vs 1.05 when reset to the model's prior per utterance).
        if len(self.free) < self.max_idle:
            self.free.append(decoder)

    def _n_active(self) -> int:
        return sum(1 for d in self.active.values() if not isinstance(d, _Failed))


class _Failed:
    """Placeholder for an utterance whose decoder could not be started."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()


# --------------------------------------------------------------------------- parent side


class _Worker:
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
        self.streams: dict[int, _SphinxStream] = {}
        self.inflight_bytes = 0
        self.outstanding = 0  # replies owed
        self.waiting_since = self.started_at  # last reply, or when replies became owed
        self.space = asyncio.Event()
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.stats_waiters: dict[int, asyncio.Future[WorkerStats]] = {}

    def owe(self, n: int = 1) -> None:
        if self.outstanding == 0:
            self.waiting_since = time.monotonic()
        self.outstanding += n

    def paid(self) -> None:
        self.outstanding = max(0, self.outstanding - 1)
        self.waiting_since = time.monotonic()

    def load(self) -> tuple[int, int]:
        return (len(self.streams), self.inflight_bytes)


class SphinxRecognizer(Recognizer):
    """pocketsphinx en-US in ``settings.workers`` processes."""

    name: ClassVar[str] = "sphinx"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # The server has threads and an event loop: forking it could copy held locks.
        self._ctx = multiprocessing.get_context("spawn")
        self._size = settings.workers
        self._slots: list[_Worker | None] = []
        self._quick_deaths: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._uids = itertools.count(1)
        self._requests = itertools.count(1)
        self._worker_up: asyncio.Event | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def model(self) -> str:
        return MODEL

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
            async with asyncio.timeout(READY_TIMEOUT_S):
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

    async def check(self) -> None:
        if not self._running:
            raise RecognizerError("the sphinx worker pool is not running")
        if not any(w is not None and w.alive for w in self._slots):
            raise RecognizerError("no sphinx worker is alive")

    def open_stream(self, *, language: str, auto_detect: bool) -> RecognizerStream:
        # One model: every language is decoded as en-US and labelled so. Pinning waits
        # for the first audio so that streams which never get any cost nothing.
        return _SphinxStream(self, next(self._uids))

    async def stats(self) -> list[WorkerStats]:
        """Decoder counters of every live worker (for tests and diagnostics)."""
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

    # ----------------------------------------------------------------- workers

    def _spawn(self, index: int) -> _Worker:
        loop = asyncio.get_running_loop()
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, index, MAX_IDLE_DECODERS),
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
        worker = _Worker(index, process, parent_conn)
        loop.add_reader(worker.fd, self._on_readable, worker)
        loop.add_reader(worker.sentinel, self._on_exit, worker)
        self._slots[index] = worker
        assert self._worker_up is not None
        self._worker_up.set()
        log.debug("sphinx_worker_spawned", index=index, pid=worker.pid)
        return worker

    def _on_readable(self, worker: _Worker) -> None:
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

    def _on_exit(self, worker: _Worker) -> None:
        # Normally EOF on the pipe comes first; this covers a pipe held open elsewhere.
        self._lose(worker, "process exited")

    def _dispatch(self, worker: _Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "ack":
            _, uid, nbytes, text, error = msg
            worker.paid()
            worker.inflight_bytes -= nbytes
            worker.space.set()
            stream = worker.streams.get(uid)
            if stream is not None:
                stream._on_ack(nbytes, text, error)
        elif kind == "final":
            _, uid, text, error = msg
            worker.paid()
            stream = worker.streams.pop(uid, None)
            if stream is not None:
                stream._on_final(text, error)
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

    def _send(self, worker: _Worker, msg: tuple[Any, ...]) -> None:
        """Send or, if the pipe is broken, declare the worker lost (then raise)."""
        try:
            worker.conn.send(msg)
        except (OSError, ValueError) as exc:
            self._lose(worker, f"send failed ({type(exc).__name__})")
            raise RecognizerError(f"sphinx worker {worker.index} is gone", fatal=True) from exc

    def _detach(self, worker: _Worker, error: RecognizerError) -> None:
        """Stop watching a worker and fail everything that waits on it."""
        if not worker.alive:
            return
        worker.alive = False
        loop = self._loop
        if loop is not None:
            loop.remove_reader(worker.fd)
            loop.remove_reader(worker.sentinel)
        streams = list(worker.streams.values())
        worker.streams.clear()
        for stream in streams:
            stream._on_fail(error)
        for fut in worker.stats_waiters.values():
            if not fut.done():
                fut.set_exception(error)
        worker.stats_waiters.clear()
        if not worker.ready.done():
            worker.ready.set_exception(error)
            worker.ready.exception()  # retrieved: nobody may be awaiting it
        worker.space.set()  # wakes feed() calls waiting for room; they see alive=False

    def _lose(self, worker: _Worker, reason: str) -> None:
        """A worker died or misbehaved: fail its streams, kill it, schedule a new one."""
        if not worker.alive:
            return
        n_streams = len(worker.streams)
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

    async def _respawn(self, dead: _Worker) -> None:
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

    async def _acquire(self) -> _Worker:
        """The least-loaded live worker, waiting a while if all are being restarted."""
        deadline = time.monotonic() + ACQUIRE_TIMEOUT_S
        while True:
            if not self._running:
                raise RecognizerError("the sphinx worker pool is not running", fatal=True)
            live = [w for w in self._slots if w is not None and w.alive]
            if live:
                return min(live, key=_Worker.load)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RecognizerError("no sphinx worker is available", fatal=True)
            assert self._worker_up is not None
            self._worker_up.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._worker_up.wait()


def _has_room(worker: _Worker, nbytes: int) -> bool:
    """Whether ``nbytes`` more audio stays within the worker's unacknowledged bound (an
    idle worker always takes one batch, however large)."""
    return not worker.inflight_bytes or worker.inflight_bytes + nbytes <= MAX_INFLIGHT_BYTES


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


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _SphinxStream(RecognizerStream):
    def __init__(self, recognizer: SphinxRecognizer, uid: int) -> None:
        self._rec = recognizer
        self._uid = uid
        self._worker: _Worker | None = None
        self._buf = bytearray()
        self._fed_bytes = 0
        self._acked_bytes = 0
        self._interims: deque[Hypothesis] = deque(maxlen=MAX_QUEUED_INTERIMS)
        self._final: Hypothesis | None = None
        self._error: RecognizerError | None = None
        self._finishing = False
        self._done = False
        self._closed = False
        self._wake = asyncio.Event()

    async def feed(self, pcm: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._finishing or self._closed:
            raise RuntimeError("feed() after finish() or aclose()")
        self._buf += pcm
        self._fed_bytes += len(pcm)
        while len(self._buf) >= BATCH_BYTES:
            batch = bytes(self._buf[:BATCH_BYTES])
            del self._buf[:BATCH_BYTES]
            await self._ship(batch)

    def feed_nowait(self, pcm: bytes) -> bool:
        if self._error is not None:
            raise self._error
        if self._finishing or self._closed:
            return False  # feed() raises
        size = len(self._buf) + len(pcm)
        if size < BATCH_BYTES:
            self._buf += pcm
            self._fed_bytes += len(pcm)
            return True
        # A batch would ship: without waiting only to a live worker already pinned, with
        # room in its pipe for the one batch.
        worker = self._worker
        if (
            worker is None
            or not worker.alive
            or size >= 2 * BATCH_BYTES
            or not _has_room(worker, BATCH_BYTES)
        ):
            return False
        self._buf += pcm
        self._fed_bytes += len(pcm)
        batch = bytes(self._buf[:BATCH_BYTES])
        del self._buf[:BATCH_BYTES]
        self._put(worker, batch)
        return True

    async def finish(self) -> None:
        if self._finishing or self._closed:
            return
        self._finishing = True
        try:
            if self._error is not None:
                return
            if self._fed_bytes == 0:
                self._mark_done()
                return
            rest = bytes(self._buf[: len(self._buf) & ~1])  # whole samples only
            self._buf.clear()
            if rest:
                await self._ship(rest)
            worker = await self._pinned()
            if self._error is None:
                self._rec._send(worker, ("end", self._uid))
                worker.owe()
        except RecognizerError as exc:
            # results() reports it; finish() often runs in cleanup paths that must not raise.
            self._on_fail(exc)

    async def results(self) -> AsyncIterator[Hypothesis]:
        while True:
            if self._closed:
                return
            if self._error is not None:
                raise self._error
            if self._interims:
                yield self._interims.popleft()
                continue
            if self._done:
                final, self._final = self._final, None
                if final is not None:
                    yield final
                return
            self._wake.clear()
            await self._wake.wait()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        worker = self._worker
        if worker is not None and worker.alive and worker.streams.pop(self._uid, None) is self:
            # Frees the decoder for the next utterance (end_utt, back to the free-list).
            with contextlib.suppress(RecognizerError):
                self._rec._send(worker, ("abort", self._uid))
        self._interims.clear()
        self._final = None
        self._wake.set()

    # -------------------------------------------------------------- internals

    async def _pinned(self) -> _Worker:
        if self._worker is None:
            worker = await self._rec._acquire()
            if self._closed:
                raise RecognizerError("stream closed", fatal=False)
            worker.streams[self._uid] = self
            self._worker = worker
            self._rec._send(worker, ("start", self._uid))
        return self._worker

    async def _ship(self, pcm: bytes) -> None:
        worker = await self._pinned()
        while worker.alive and not _has_room(worker, len(pcm)):
            worker.space.clear()
            await worker.space.wait()
        if self._error is not None:
            raise self._error
        if self._closed:
            return
        self._put(worker, pcm)

    def _put(self, worker: _Worker, pcm: bytes) -> None:
        self._rec._send(worker, ("audio", self._uid, pcm))
        worker.inflight_bytes += len(pcm)
        worker.owe()

    def _on_ack(self, nbytes: int, text: str | None, error: str | None) -> None:
        self._acked_bytes += nbytes
        if error is not None:
            self._fail_decode(error)
        elif text and not self._done:
            # Unchanged text is sent again on purpose: it is the heartbeat that keeps
            # interims within 300 ms of audio of each other while speech goes on.
            # end_ms: how far decoding got, so callers can tell interim cadence in audio time.
            self._interims.append(
                Hypothesis(
                    text=text,
                    is_final=False,
                    lang=LANG,
                    start_ms=0,
                    end_ms=self._acked_bytes // BYTES_PER_MS,
                )
            )
            self._wake.set()

    def _on_final(self, text: str | None, error: str | None) -> None:
        if error is not None:
            self._fail_decode(error)
            return
        if text:
            self._final = Hypothesis(
                text=text,
                is_final=True,
                lang=LANG,
                start_ms=0,
                end_ms=self._fed_bytes // BYTES_PER_MS,
            )
        self._mark_done()

    def _fail_decode(self, error: str) -> None:
        # One utterance went wrong inside a healthy worker: the session may go on.
        log.error("sphinx_decode_failed", uid=self._uid, error=error)
        worker = self._worker
        if worker is not None:
            worker.streams.pop(self._uid, None)
        self._on_fail(RecognizerError(f"sphinx could not decode: {error}", fatal=False))

    def _on_fail(self, error: RecognizerError) -> None:
        if self._error is None and not self._done:
            self._error = error
        self._mark_done()

    def _mark_done(self) -> None:
        self._done = True
        self._wake.set()
