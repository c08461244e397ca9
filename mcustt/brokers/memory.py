"""In-process broker: the default for a single node."""

from __future__ import annotations

from mcustt.brokers.base import Broker, Deliver, Resync
from mcustt.config import Settings


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self, settings: Settings, deliver: Deliver, resync: Resync) -> None:
        super().__init__(settings, deliver, resync)
        self._channels: set[str] = set()

    async def publish(self, session_id: str, message: str) -> None:
        if session_id in self._channels:
            self.deliver(session_id, message)

    async def subscribe(self, session_id: str) -> None:
        self._channels.add(session_id)

    async def unsubscribe(self, session_id: str) -> None:
        self._channels.discard(session_id)
