"""Caption fan-out: the per-node hub, and the viewer loop shared by WS and SSE.

Each node subscribes to a session's broker channel once, however many local viewers
watch it, and copies each parsed :class:`Event` into every viewer's bounded queue. A
viewer whose queue is full is kicked (disconnected with a reason) instead of slowing
anyone else; it can reconnect with ``lastSeq`` / ``Last-Event-ID`` and lose nothing.

Replay without gap or duplicate: a viewer joins the hub *before* reading persisted
finals, so a final is either in the database read, in the queue, or both; the seq
filter drops the second copy.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog

from mcustt.brokers import Broker, load_broker
from mcustt.config import Settings
from mcustt.events import Event, dumps, line_event, session_end
from mcustt.store.repo import Repo

log = structlog.get_logger(__name__)

#: Put in a queue after a broker reconnect: replay from the store, then go on.
RESYNC = object()
REPLAY_BATCH = 500


class Viewer:
    def __init__(self, session_id: str, maxsize: int) -> None:
        self.session_id = session_id
        self.queue: asyncio.Queue[Event | object] = asyncio.Queue(maxsize)
        self.kicked: str | None = None
        #: set by the transport so a kick can interrupt a send that is stuck.
        self.on_kick: Callable[[str], None] | None = None

    def offer(self, item: Event | object) -> None:
        if self.kicked:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.kick("SLOW_CONSUMER: the viewer fell behind; reconnect with lastSeq")

    def kick(self, reason: str) -> None:
        if self.kicked:
            return
        self.kicked = reason
        log.info("viewer kicked", session_id=self.session_id, reason=reason)
        if self.on_kick is not None:
            self.on_kick(reason)


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker: Broker = load_broker(settings, self._deliver, self._resync)
        self._viewers: dict[str, set[Viewer]] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.delivered = 0

    async def start(self) -> None:
        await self.broker.start()

    async def aclose(self) -> None:
        for viewers in list(self._viewers.values()):
            for viewer in list(viewers):
                viewer.kick("SERVER_SHUTDOWN: the server is restarting; reconnect")
        await self.broker.aclose()

    async def publish(self, session_id: str, data: dict[str, Any]) -> None:
        """Serialize once and send to every node watching the session."""
        await self.broker.publish(session_id, dumps(data))

    async def join(self, session_id: str) -> Viewer:
        """Register a viewer; returns once the broker delivers to it."""
        viewer = Viewer(session_id, self.settings.viewer_queue_size)
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
        for viewer in list(viewers):
            viewer.offer(event)
        self.delivered += len(viewers)

    def _resync(self) -> None:
        for viewers in self._viewers.values():
            for viewer in list(viewers):
                viewer.offer(RESYNC)


async def follow(
    repo: Repo,
    viewer: Viewer,
    *,
    last_seq: int | None,
    session_ended: Callable[[], Awaitable[bool]],
) -> AsyncIterator[Event]:
    """Replay finals after ``last_seq`` (if given), then live events, each once.

    Ends after ``session-end``. The caller joined ``viewer`` to the hub first and
    leaves it afterwards.
    """
    sent = -1 if last_seq is None else last_seq

    async def replay(after: int) -> AsyncIterator[Event]:
        nonlocal sent
        while True:
            lines = await repo.lines_after(viewer.session_id, after, limit=REPLAY_BATCH)
            for line in lines:
                sent = max(sent, line.seq)
                yield Event.make(line_event(line))
            if len(lines) < REPLAY_BATCH:
                return
            after = lines[-1].seq

    if last_seq is not None:
        async for event in replay(last_seq):
            yield event
    if await session_ended():
        # Finals persisted between the replay and this check are not lost: read again.
        if last_seq is not None:
            async for event in replay(sent):
                yield event
        yield Event.make(session_end())
        return
    while True:
        item = await viewer.queue.get()
        if item is RESYNC:
            async for event in replay(max(sent, 0)):
                yield event
            continue
        assert isinstance(item, Event)
        if item.internal:
            continue
        if item.type == "transcript" and item.seq is not None:
            if item.seq <= sent:
                continue  # already replayed (or superseded by its final)
            if item.is_final:
                sent = item.seq
        yield item
        if item.type == "session-end":
            return
