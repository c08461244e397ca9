"""Caption fan-out: the per-node hub, and the viewer loop shared by WS and SSE.

Each node subscribes to a session's broker channel once, however many local viewers
watch it, and copies each parsed :class:`Event` into every viewer's bounded mailbox. A
viewer whose mailbox is full is kicked (disconnected with a reason) instead of slowing
anyone else; it can reconnect with ``lastSeq`` / ``Last-Event-ID`` and lose nothing.

Replay without gap or duplicate: a viewer joins the hub *before* reading persisted
finals, so a final is either in the database read, in the mailbox, or both; the seq
filter drops the second copy.

Corrections (issue 16) are transcript events with ``revised: true`` and the seq of the
line they correct. They pass the seq filter whatever the viewer's position, and never
advance it: the finals' gap-free seq stream is untouched. A replay reads lines with
their current text, and a viewer resuming at ``lastSeq`` N first gets the corrected
lines at or below N again as ``revised`` events, so a correction made while it was away
is not lost either (corrections are rare: that is a short list).

This is the hot path of a node with thousands of viewers. Each viewer has a relay task
(:func:`relay`) that sends what its mailbox holds, in order. While that relay is idle in
the live phase, the hub does not wake it: it runs the viewer's send itself, at once
(:meth:`Viewer.offer`); only a send that has to wait (the socket's buffer is full) is
handed to the relay, and everything after it queues behind it as usual, so order,
backpressure and kicks are unchanged while a delivery costs about what writing to the
socket costs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from typing import Any

import structlog

from mcustt.brokers import Broker, load_broker
from mcustt.caption_health import Delivery
from mcustt.config import Settings
from mcustt.events import Event, dumps, line_event, revised_event, session_end
from mcustt.metrics import Metrics
from mcustt.store.repo import Repo
from mcustt.wire import ChannelMessage

log = structlog.get_logger(__name__)

#: Put in a mailbox after a broker reconnect: replay from the store, then go on.
RESYNC = object()
#: Put in SSE viewers' mailboxes every ``sse_ping_s``: the transport sends a comment.
PING = object()
REPLAY_BATCH = 500
#: How often the hub looks whether uvicorn started shutting down (uvicorn's own tick).
EXIT_POLL_S = 0.1
SERVER_SHUTDOWN = "SERVER_SHUTDOWN: the server is restarting; reconnect"


class Mailbox:
    """A bounded FIFO with one reader: lighter than :class:`asyncio.Queue` (a list, no
    future per item unless the reader sleeps, no ``join`` bookkeeping), which matters at
    thousands of viewers a node. Mailboxes are short (a slow viewer is kicked)."""

    __slots__ = ("_items", "_loop", "_maxsize", "_waiter")

    def __init__(self, maxsize: int) -> None:
        self._items: list[Event | object] = []
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def empty(self) -> bool:
        return not self._items

    def offer(self, item: Event | object) -> bool:
        """Queue ``item``, or return False when the mailbox is full."""
        items = self._items
        if 0 < self._maxsize <= len(items):
            return False
        items.append(item)
        if self._waiter is not None:
            self.wake()
        return True

    def push_front(self, items: Iterable[Event | object]) -> None:
        """Put ``items`` back ahead of everything queued (the bound does not apply: they
        were in the mailbox already, or are a send already under way)."""
        self._items[:0] = items
        self.wake()

    def get_nowait(self) -> Event | object:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> Event | object:
        while not self._items:
            await self.waiter()
        return self._items.pop(0)

    def drain(self) -> list[Event | object]:
        """Everything queued, oldest first; the mailbox is empty afterwards."""
        items, self._items = self._items, []
        return items

    def waiter(self) -> asyncio.Future[None]:
        """A future that is done once an item is queued or :meth:`wake` is called; for
        the one reader, to await while the mailbox is empty."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        waiter = self._waiter = self._loop.create_future()
        return waiter

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


#: Builds the coroutine that sends one item to the viewer's transport.
Send = Callable[[Event | object], Coroutine[Any, Any, Any]]


class _Pending:
    """A send the hub ran for an idle viewer that suspended (its socket was full): the
    relay finishes it before anything else (see :class:`_Continue`)."""

    __slots__ = ("coro", "event", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any, event: Event) -> None:
        self.coro = coro
        self.yielded = yielded
        self.event = event  # what it sends (caption health: when its send completes)


class _Continue:
    """Await the rest of a coroutine that was stepped by hand (``coro.send(None)``) and
    suspended on ``yielded``: the futures it waits on are handed to the awaiting task,
    results and exceptions (a kick's cancellation) are passed back in, exactly as if the
    task had been running it from the start (what Python 3.12's eager tasks do)."""

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self.coro, self.yielded
        while True:
            try:
                value = yield yielded
            except BaseException as exc:
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(value)
                except StopIteration as stop:
                    return stop.value


class Viewer:
    __slots__ = (
        "closed",
        "delivery",
        "direct",
        "kicked",
        "on_kick",
        "pings",
        "queue",
        "replayed",
        "session_id",
    )

    def __init__(self, session_id: str, maxsize: int, *, pings: bool = False) -> None:
        self.session_id = session_id
        self.queue = Mailbox(maxsize)
        #: why the hub dropped this viewer (slow, or shutdown); None while it is fine
        self.kicked: str | None = None
        #: set by the transport when its peer went away: the relay stops
        self.closed = False
        #: the hub puts :data:`PING` in this viewer's mailbox every ``sse_ping_s``
        self.pings = pings
        #: set by the relay so a kick can interrupt a send that is stuck.
        self.on_kick: Callable[[str], None] | None = None
        #: (filter, send) while the relay sleeps on an empty mailbox in the live phase:
        #: the hub may then send transcripts itself (see :meth:`offer`)
        self.direct: tuple[Follow, Send] | None = None
        #: issue 17: observes each live final's completed send (None: not measured)
        self.delivery: Delivery | None = None
        #: counts finals this viewer got from the store (set by the hub: its metrics)
        self.replayed: Callable[[int], None] | None = None

    def offer(self, item: Event | object) -> None:
        if self.kicked:
            return
        direct = self.direct
        if direct is not None and item.__class__ is Event:
            event: Event = item
            follow, send = direct
            # (a final after a gap in seq is not sent from here: it queues for the relay,
            # which fills the gap from the store first)
            if event.type == "transcript" and not follow.gap(event):
                if not follow.admit(event):
                    return
                try:
                    coro = send(event)
                    yielded = coro.send(None)
                except StopIteration:
                    _delivered(self, event)
                    return  # sent, without waking anyone
                except Exception as exc:
                    # The transport refused (the peer is gone): the relay ends.
                    log.debug("viewer send failed", session_id=self.session_id, error=repr(exc))
                    self.close()
                    return
                # It has to wait for the socket: the relay takes it over, in first place.
                self.direct = None
                self.queue.push_front((_Pending(coro, yielded, event),))
                return
        self.direct = None  # something is queued now: later items must queue behind it
        if not self.queue.offer(item):
            self.kick("SLOW_CONSUMER: the viewer fell behind; reconnect with lastSeq")

    def kick(self, reason: str) -> None:
        if self.kicked:
            return
        self.kicked = reason
        self.direct = None
        log.info("viewer kicked", session_id=self.session_id, reason=reason)
        self.queue.wake()
        if self.on_kick is not None:
            self.on_kick(reason)

    def close(self) -> None:
        """The transport's peer left: wake the relay so it ends."""
        self.closed = True
        self.direct = None
        self.queue.wake()


class Hub:
    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.broker: Broker = load_broker(settings, self._deliver, self._resync)
        self._viewers: dict[str, set[Viewer]] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: list[asyncio.Task[None]] = []
        #: issue 17: caption delivery timing, given to each viewer (None: no metrics)
        self.delivery: Delivery | None = Delivery(metrics) if metrics is not None else None

    async def start(self) -> None:
        await self.broker.start()
        if self.settings.sse_ping_s > 0:
            self._tasks.append(asyncio.create_task(self._ping_loop(), name="hub-sse-ping"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.kick_all(SERVER_SHUTDOWN)
        await self.broker.aclose()

    def kick_all(self, reason: str, *, only_pinged: bool = False) -> None:
        for viewers in list(self._viewers.values()):
            for viewer in list(viewers):
                if viewer.pings or not only_pinged:
                    viewer.kick(reason)

    async def publish(self, session_id: str, data: ChannelMessage) -> None:
        """Serialize once and send to every node watching the session."""
        await self.broker.publish(session_id, dumps(data))

    async def join(self, session_id: str, *, pings: bool = False) -> Viewer:
        """Register a viewer; returns once the broker delivers to it.

        ``pings``: the transport wants :data:`PING` every ``sse_ping_s`` (SSE keep-alive).
        """
        viewer = Viewer(session_id, self.settings.viewer_queue_size, pings=pings)
        viewer.delivery = self.delivery
        if self.metrics is not None:
            viewer.replayed = self.metrics.finals_replayed.inc
        async with self._locks[session_id]:
            viewers = self._viewers.get(session_id)
            if viewers is None:
                await self.broker.subscribe(session_id)
                viewers = self._viewers[session_id] = set()
            viewers.add(viewer)
        return viewer

    async def leave(self, viewer: Viewer) -> None:
        async with self._locks[viewer.session_id]:
            viewers = self._viewers.get(viewer.session_id)
            if viewers is None:
                return
            viewers.discard(viewer)
            if not viewers:
                del self._viewers[viewer.session_id]
                await self.broker.unsubscribe(viewer.session_id)
        if not self._locks[viewer.session_id].locked() and viewer.session_id not in self._viewers:
            self._locks.pop(viewer.session_id, None)

    def count(self, session_id: str) -> int:
        return len(self._viewers.get(session_id, ()))

    def local_viewers(self) -> list[Viewer]:
        """Every viewer joined on this node, a snapshot (a drain waits for each to have
        sent what it was given: issue 13)."""
        return [viewer for viewers in self._viewers.values() for viewer in viewers]

    @property
    def total_viewers(self) -> int:
        return sum(len(v) for v in self._viewers.values())

    def _deliver(self, session_id: str, raw: str) -> None:
        viewers = self._viewers.get(session_id)
        if not viewers:
            return
        try:
            event = Event(raw)
        except ValueError:
            log.warning("dropping malformed broker message", session_id=session_id)
            return
        if event.type == "_resync":
            # Another node could not publish some of this session's messages (its
            # outbox overflowed during a broker outage): replay from the store.
            for viewer in list(viewers):
                viewer.offer(RESYNC)
            return
        for viewer in list(viewers):
            viewer.offer(event)

    def _resync(self) -> None:
        if self.metrics is not None:
            self.metrics.broker_reconnects.inc()
        for viewers in self._viewers.values():
            for viewer in list(viewers):
                viewer.offer(RESYNC)

    async def _ping_loop(self) -> None:
        """One timer for every SSE viewer of the node (not one task or timer each)."""
        while True:
            await asyncio.sleep(self.settings.sse_ping_s)
            for viewers in list(self._viewers.values()):
                for viewer in list(viewers):
                    if viewer.pings:
                        viewer.offer(PING)

    def watch_exit(self, exiting: Callable[[], bool]) -> None:
        """End SSE streams as soon as ``exiting()`` (the server starts shutting down).

        uvicorn waits for open HTTP responses before the lifespan shutdown (where
        :meth:`aclose` kicks everyone), and an event stream never finishes by itself.
        WebSocket viewers need nothing: uvicorn closes those sockets (1012) itself.
        :class:`mcustt.server.Server` calls this once it has started.
        """
        self._tasks.append(asyncio.create_task(self._exit_watch(exiting), name="hub-exit-watch"))

    async def _exit_watch(self, exiting: Callable[[], bool]) -> None:
        # uvicorn offers a flag, not an event to wait on: it polls it itself.
        while not exiting():  # noqa: ASYNC110
            await asyncio.sleep(EXIT_POLL_S)
        self.kick_all(SERVER_SHUTDOWN, only_pinged=True)


class Follow:
    """Replay finals after ``last_seq`` (if given; corrected lines at or below it come
    first, as ``revised`` events), then live events, each once.

    The transport's relay drives it: :meth:`start` (the replay, or everything when the
    session already ended), then, each time the mailbox has something, :meth:`take`
    (synchronous: no coroutine layers on the per-event path) and, when a broker
    reconnect asked for it (:attr:`resync`), :meth:`replay_missed`. :attr:`done` turns
    true after ``session-end``. The caller joined ``viewer`` to the hub first and leaves
    it afterwards.
    """

    __slots__ = (
        "done",
        "finals",
        "gap_seq",
        "repo",
        "resync",
        "sent",
        "session_ended",
        "viewer",
    )

    def __init__(
        self,
        repo: Repo,
        viewer: Viewer,
        *,
        last_seq: int | None,
        session_ended: Callable[[], Awaitable[bool]],
    ) -> None:
        self.repo = repo
        self.viewer = viewer
        self.session_ended = session_ended
        self.sent = -1 if last_seq is None else last_seq
        #: per speaker ("" for the mixed producer): the seq of its last final sent. An
        #: interim is stale once its speaker's final went out; other speakers' finals
        #: say nothing about it (their seqs interleave: both lines are live at once).
        self.finals: dict[str, int] = {"": self.sent} if last_seq is not None else {}
        #: the final whose gap a replay from the store was asked to fill (once)
        self.gap_seq = -1
        self.done = False
        self.resync = False

    async def _replay(self, after: int) -> list[Event | object]:
        out: list[Event | object] = []
        while True:
            lines = await self.repo.lines_after(self.viewer.session_id, after, limit=REPLAY_BATCH)
            if lines:
                self.sent = max(self.sent, lines[-1].seq)
                if self.viewer.replayed is not None:
                    self.viewer.replayed(len(lines))
                for line in lines:
                    self.finals[line.speaker or ""] = line.seq
                # Lines of participant tracks carry their speaker's current name.
                names = None
                if any(line.speaker for line in lines):
                    names = await self.repo.speaker_names(self.viewer.session_id)
                out += [Event.make(line_event(line, names)) for line in lines]
            if len(lines) < REPLAY_BATCH:
                return out
            after = lines[-1].seq

    async def _corrections(self, upto: int) -> list[Event | object]:
        """The lines at or below ``upto`` that were corrected, as ``revised`` events."""
        out: list[Event | object] = []
        after = 0
        while upto > after:
            lines = await self.repo.corrected_lines(
                self.viewer.session_id, after=after, upto=upto, limit=REPLAY_BATCH
            )
            out += [Event.make(revised_event(line)) for line in lines]
            if len(lines) < REPLAY_BATCH:
                return out
            after = lines[-1].seq
        return out

    async def start(self, last_seq: int | None) -> list[Event | object]:
        out: list[Event | object] = []
        if last_seq is not None:
            out += await self._corrections(last_seq)
            out += await self._replay(last_seq)
        if await self.session_ended():
            # Finals persisted between the replay and this check are not lost: read again.
            if last_seq is not None:
                out += await self._replay(self.sent)
            out.append(Event.make(session_end()))
            self.done = True
        return out

    async def replay_missed(self) -> list[Event | object]:
        """After a broker reconnect: the finals missed meanwhile, and ``session-end``
        if the session ended meanwhile (that event is not replayable, only its state)."""
        self.resync = False
        # Corrections published meanwhile were lost with the connection too.
        out = await self._corrections(self.sent)
        out += await self._replay(max(self.sent, 0))
        if await self.session_ended():
            out += await self._replay(max(self.sent, 0))
            out.append(Event.make(session_end()))
            self.done = True
        return out

    def gap(self, event: Event) -> bool:
        """Whether ``event`` is a final that skips seqs this viewer has not had: the
        tracks of a session on different nodes publish independently, so seq n+1 may
        arrive before n. The store has n whenever it has n+1 (seqs are allocated in the
        transaction that persists the line), so a replay from it fills the gap. Asked
        once per final: if the replay did not fill it, the final goes out anyway."""
        seq = event.seq
        return (
            event.is_final
            and seq is not None
            and 0 <= self.sent < seq - 1
            and seq != self.gap_seq
            and event.type == "transcript"
        )

    def admit(self, event: Event) -> bool:
        """Whether a live transcript is new to this viewer (and note it if final)."""
        seq = event.seq
        if seq is None or event.revised:
            return True  # a correction passes whatever the viewer's seq
        if event.is_final:
            if seq <= self.sent:
                return False  # already replayed
            self.sent = seq
            self.finals[event.speaker] = seq
            return True
        # An interim is stale once its own speaker's final is out.
        return seq > self.finals.get(event.speaker, -1)

    def take(self) -> list[Event | object]:
        """What the mailbox holds that this viewer should get, in order.

        Stops at :data:`RESYNC` (setting :attr:`resync`; the rest stays queued) and at
        ``session-end`` (setting :attr:`done`).
        """
        mailbox = self.viewer.queue
        items = mailbox.drain()
        out: list[Event | object] = []
        sent = self.sent
        for i, item in enumerate(items):
            if item is RESYNC:
                self.resync = True
                mailbox.push_front(items[i + 1 :])  # the rest waits for the replay
                break
            if item is PING or item.__class__ is _Pending:
                out.append(item)
                continue
            assert isinstance(item, Event)
            kind = item.type
            if kind.startswith("_"):
                continue  # node-to-node control
            if kind == "transcript" and item.seq is not None and not item.revised:
                if item.is_final:
                    if item.seq <= sent:
                        continue  # already replayed
                    if 0 <= sent < item.seq - 1 and item.seq != self.gap_seq:
                        # A gap (another node's final not here yet): fill it from the
                        # store first; this final waits in the mailbox.
                        self.gap_seq = item.seq
                        self.resync = True
                        mailbox.push_front(items[i:])
                        break
                    sent = item.seq
                    self.finals[item.speaker] = sent
                elif item.seq <= self.finals.get(item.speaker, -1):
                    continue  # its speaker's final is out already
            out.append(item)
            if kind == "session-end":
                self.done = True
                break
        self.sent = sent
        return out


def _delivered(viewer: Viewer, item: Event | object) -> None:
    """A send to ``viewer`` completed: time it if it was a live final (issue 17)."""
    delivery = viewer.delivery
    if delivery is not None and item.__class__ is Event:
        event: Event = item
        if event.is_final and not event.revised and event.type == "transcript":
            delivery.delivered(event.data.get("ts"), sse=viewer.pings)


async def relay(
    repo: Repo,
    viewer: Viewer,
    *,
    last_seq: int | None,
    session_ended: Callable[[], Awaitable[bool]],
    send: Send,
) -> None:
    """Send a viewer its events through ``send``: the replay, then live events, each
    once. Returns after ``session-end``, or once the viewer is closed or kicked; a kick
    also cancels a send stuck on a full socket (that cancellation is absorbed here: the
    caller sees ``viewer.kicked``). Run it as its own task, with a shallow stack."""
    task = asyncio.current_task()
    assert task is not None

    def interrupt(_reason: str) -> None:
        task.cancel()

    viewer.on_kick = interrupt
    follow = Follow(repo, viewer, last_seq=last_seq, session_ended=session_ended)
    direct = (follow, send)
    queue = viewer.queue
    try:
        batch = await follow.start(last_seq)
        live = False  # a replay is not live delivery (caption health)
        while True:
            for item in batch:
                if item.__class__ is _Pending:
                    await _Continue(item.coro, item.yielded)
                    _delivered(viewer, item.event)
                else:
                    await send(item)
                    if live:
                        _delivered(viewer, item)
            if follow.done:
                return
            if follow.resync:
                batch = await follow.replay_missed()
                live = False
                continue
            if queue.empty():
                if viewer.kicked or viewer.closed:
                    return
                viewer.direct = direct  # idle: the hub may send for us meanwhile
                try:
                    await queue.waiter()
                finally:
                    viewer.direct = None
            if viewer.kicked or viewer.closed:
                return
            batch = follow.take()
            live = True
    except asyncio.CancelledError:
        if not viewer.kicked:
            raise
        task.uncancel()
    finally:
        viewer.on_kick = None
        viewer.direct = None
        for item in viewer.queue.drain():
            if item.__class__ is _Pending:
                item.coro.close()
