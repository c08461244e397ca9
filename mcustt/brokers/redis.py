"""Redis pub/sub broker: any node can serve any viewer.

One PubSub connection per node carries every session channel this node watches, read
by one task. When Redis drops, that task reconnects (backoff capped at
:data:`RECONNECT_MAX_S`, so fan-out resumes within about a second of Redis being
back), re-subscribes, and asks the hub to resync so viewers replay anything persisted
meanwhile. The resync follows Redis's confirmation of the subscriptions, whoever
re-subscribed: redis-py reconnects a PubSub by itself on a read error, and a reconnect
the reader never saw must resync all the same (issue 13).

Publishing never waits on an outage, and never drops a message while memory allows
(issue 13: a final published on a connection Redis had just closed reached no viewer).
A message that cannot be sent goes to a bounded per-node outbox, and so does every
later one while the outbox is not empty, so a session's messages keep their order; one
task drains it, in order, as soon as Redis answers. Meanwhile this node's own viewers
get those messages at once (local delivery), so the producer's node keeps captioning
live through an outage; the copies that come back through Redis later are dropped by
the viewers' seq filter. Should the outbox overflow, its oldest messages are dropped
and their sessions get a ``_resync`` once Redis is back: every node's viewers of them
replay from the store, which has every final (finals are persisted before they are
published).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mcustt.brokers.base import Broker, Deliver, Resync
from mcustt.config import Settings
from mcustt.wire import ResyncControl

log = structlog.get_logger(__name__)

#: The reader's reconnect backoff doubles from 50 ms up to this: fan-out resumes within
#: about this long of Redis answering again.
RECONNECT_MAX_S = 0.5
#: Messages kept for Redis while it is unreachable (about a minute of a busy node's
#: finals and interims); older ones are dropped, their sessions resynced from the store.
OUTBOX_MAX = 20_000
#: The outbox's drainer waits this long after a failed send before the next try.
DRAIN_RETRY_S = 0.2
#: Connections a node holds to Redis at most (publishes, resync reads, the subscriber):
#: a pool keeps what it once needed, so without a bound a burst would pin a connection
#: per concurrent publish; beyond it a command waits for one to come back.
MAX_CONNECTIONS = 64
#: ... at most this long; then it fails like an unreachable Redis (the outbox takes it).
POOL_WAIT_S = 5.0
_RESYNC: ResyncControl = {"type": "_resync"}
RESYNC_MESSAGE = json.dumps(_RESYNC, separators=(",", ":"))


class RedisBroker(Broker):
    name = "redis"

    def __init__(self, settings: Settings, deliver: Deliver, resync: Resync) -> None:
        super().__init__(settings, deliver, resync)
        assert self.settings.redis_url, "RedisBroker needs MCUSTT_REDIS_URL"
        self._prefix = f"{self.settings.redis_prefix}:events:"
        # One retry, at once: a pooled connection Redis closed in a restart fails once
        # and a fresh one is dialled. redis-py's default (10 retries, backoff up to 1 s
        # each) held a publish (and the pipeline's final) for seconds in an outage; our
        # own loops retry instead, without blocking anyone.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.settings.redis_url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT_S,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=2,
        )
        self._client: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._pubsub: aioredis.client.PubSub | None = None
        self._channels: set[str] = set()
        # Confirmed last in every full (re)subscribe: see _run.
        self._placeholder = self._prefix + "_"
        # Subscribe confirmations: channel -> futures waiting for Redis to confirm.
        self._pending: dict[str, list[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        #: whether Redis ever confirmed our subscriptions: every later confirmation of
        #: the placeholder is a reconnect (a gap), and resyncs
        self._confirmed = False
        #: the reader lost Redis and has not got it back: publishes go to the outbox
        #: at once (not at start-up, before the first connect: they try Redis then)
        self._down = False
        self._lock = asyncio.Lock()
        #: (session id, message) not sent yet, oldest first; and the one being sent
        self._outbox: deque[tuple[str, str]] = deque()
        self._sending: tuple[str, str] | None = None
        #: sessions that lost messages to the outbox's bound: resynced once Redis is back
        self._dropped: set[str] = set()
        self._outbox_ready = asyncio.Event()

    def _channel(self, session_id: str) -> str:
        return self._prefix + session_id

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._run(), name="redis-broker-reader")
        self._drainer = asyncio.create_task(self._drain(), name="redis-broker-outbox")

    async def aclose(self) -> None:
        for task in (self._reader, self._drainer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader = self._drainer = None
        if self._outbox:
            # Viewers resume with lastSeq from another node: finals are in the store.
            log.warning("redis broker closed with messages unsent", unsent=len(self._outbox))
            self._outbox.clear()
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        await self._client.aclose()

    async def check(self) -> None:
        await self._client.ping()

    @property
    def unsent(self) -> int:
        """Messages waiting for Redis (the outbox)."""
        return len(self._outbox) + (self._sending is not None)

    async def publish(self, session_id: str, message: str) -> None:
        if self._outbox or self._sending is not None or self._down:
            # Redis is away, or earlier messages still wait: this one goes behind them.
            self._enqueue(session_id, message)
            return
        try:
            await self._client.publish(self._channel(session_id), message)
        except (RedisError, OSError) as exc:
            log.warning("redis publish failed; kept for later", error=str(exc))
            self._enqueue(session_id, message)

    def _enqueue(self, session_id: str, message: str) -> None:
        if len(self._outbox) >= OUTBOX_MAX:
            dropped, _ = self._outbox.popleft()
            if dropped not in self._dropped:
                log.warning("redis outbox full: dropping oldest", session_id=dropped)
            self._dropped.add(dropped)
        self._outbox.append((session_id, message))
        self._outbox_ready.set()
        if self._channel(session_id) in self._channels and not _is_control(message):
            # This node's viewers need not wait for Redis (their seq filter drops the
            # copy that comes back through Redis later).
            self.deliver(session_id, message)

    async def _drain(self) -> None:
        """Send the outbox in order once Redis answers, then the resyncs it owes."""
        while True:
            await self._outbox_ready.wait()
            await self._connected.wait()
            try:
                while self._outbox:
                    item = self._sending = self._outbox.popleft()
                    try:
                        await self._client.publish(self._channel(item[0]), item[1])
                    except BaseException:
                        self._outbox.appendleft(item)  # first again, whatever happened
                        raise
                    finally:
                        self._sending = None
                while self._dropped:
                    session_id = next(iter(self._dropped))
                    await self._client.publish(self._channel(session_id), RESYNC_MESSAGE)
                    self._dropped.discard(session_id)
                # No await since the loops saw both empty: nothing was queued meanwhile.
                self._outbox_ready.clear()
                log.info("redis outbox drained")
            except (RedisError, OSError) as exc:
                log.warning("redis outbox send failed; retrying", error=str(exc))
                await asyncio.sleep(DRAIN_RETRY_S)

    async def subscribe(self, session_id: str) -> None:
        channel = self._channel(session_id)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        async with self._lock:
            self._channels.add(channel)
            self._pending.setdefault(channel, []).append(fut)
            if self._pubsub is not None and self._connected.is_set():
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.subscribe(channel)
        # The reader resolves this on Redis's confirmation (or after a reconnect,
        # when it re-subscribes everything), so later publishes are never missed.
        # While Redis is away there is nothing to wait for: the reconnect subscribes
        # the channel, then resyncs every viewer (this one too), so nothing is missed
        # either, and a viewer is not kept waiting by an outage.
        deadline = loop.time() + 10
        while not fut.done():
            if self._down:
                return
            try:
                async with asyncio.timeout(0.25):
                    await asyncio.shield(fut)
            except TimeoutError:
                if loop.time() > deadline:
                    raise
        fut.result()

    async def unsubscribe(self, session_id: str) -> None:
        channel = self._channel(session_id)
        async with self._lock:
            self._channels.discard(channel)
            for fut in self._pending.pop(channel, []):
                if not fut.done():
                    fut.cancel()
            if self._pubsub is not None and self._connected.is_set():
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.unsubscribe(channel)

    async def _run(self) -> None:
        backoff = 0.05
        lost = False
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            try:
                self._pubsub = pubsub
                async with self._lock:
                    # The placeholder keeps the connection in subscribe mode even when
                    # this node watches no session yet, and comes last: one SUBSCRIBE
                    # is applied at once, so its confirmation means all are in effect.
                    await pubsub.subscribe(*self._channels, self._placeholder)
                    self._connected.set()
                backoff = 0.05
                async for msg in pubsub.listen():
                    kind = msg.get("type")
                    channel = msg["channel"].decode()
                    if kind == "message":
                        data = msg["data"]
                        text = data.decode() if isinstance(data, bytes) else str(data)
                        self.deliver(channel[len(self._prefix) :], text)
                    elif kind == "subscribe":
                        for fut in self._pending.pop(channel, []):
                            if not fut.done():
                                fut.set_result(None)
                        if channel == self._placeholder:
                            self._connected.set()
                            if self._confirmed:
                                # A reconnect, ours or redis-py's own: messages may
                                # have been missed meanwhile.
                                log.info("redis broker reconnected", channels=len(self._channels))
                                self.resync()
                            self._confirmed = True
                            self._down = lost = False
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._connected.clear()
                self._down = True
                if not lost:
                    log.warning("redis broker connection lost", error=str(exc))
                lost = True
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                self._pubsub = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)


def _is_control(message: str) -> bool:
    """Whether a channel message is node-to-node control (``_stop``): never delivered
    locally out of band (only parsed in an outage, so its cost does not matter)."""
    try:
        kind = json.loads(message).get("type", "")
    except (ValueError, AttributeError):
        return True
    return isinstance(kind, str) and kind.startswith("_")
