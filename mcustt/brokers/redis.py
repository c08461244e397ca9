"""Redis pub/sub broker: any node can serve any viewer.

One PubSub connection per node carries every session channel this node watches, read
by one task. When Redis drops, that task reconnects with backoff, re-subscribes, and
asks the hub to resync so viewers replay anything persisted meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from mcustt.brokers.base import Broker, Deliver, Resync
from mcustt.config import Settings

log = structlog.get_logger(__name__)


class RedisBroker(Broker):
    name = "redis"

    def __init__(self, settings: Settings, deliver: Deliver, resync: Resync) -> None:
        super().__init__(settings, deliver, resync)
        assert self.settings.redis_url, "RedisBroker needs MCUSTT_REDIS_URL"
        self._prefix = f"{self.settings.redis_prefix}:events:"
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            self.settings.redis_url, health_check_interval=10
        )
        self._pubsub: aioredis.client.PubSub | None = None
        self._channels: set[str] = set()
        # Subscribe confirmations: channel -> futures waiting for Redis to confirm.
        self._pending: dict[str, list[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._lock = asyncio.Lock()

    def _channel(self, session_id: str) -> str:
        return self._prefix + session_id

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._run(), name="redis-broker-reader")

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._client.aclose()

    async def check(self) -> None:
        await self._client.ping()

    async def publish(self, session_id: str, message: str) -> None:
        await self._client.publish(self._channel(session_id), message)

    async def subscribe(self, session_id: str) -> None:
        channel = self._channel(session_id)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with self._lock:
            self._channels.add(channel)
            self._pending.setdefault(channel, []).append(fut)
            if self._pubsub is not None and self._connected.is_set():
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.subscribe(channel)
        # The reader resolves this on Redis's confirmation (or after a reconnect,
        # when it re-subscribes everything), so later publishes are never missed.
        await asyncio.wait_for(fut, timeout=10)

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
        backoff = 0.1
        first = True
        while True:
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=False)
                self._pubsub = pubsub
                async with self._lock:
                    # A placeholder channel keeps the connection in subscribe mode even
                    # when this node watches no session yet.
                    await pubsub.subscribe(self._prefix + "_", *self._channels)
                    self._connected.set()
                if not first:
                    log.info("redis broker reconnected", channels=len(self._channels))
                    self.resync()
                first = False
                backoff = 0.1
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
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._connected.clear()
                log.warning("redis broker connection lost", error=str(exc), retry_in=backoff)
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                self._pubsub = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
