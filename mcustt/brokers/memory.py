"""In-process broker: the default for a single node."""

from __future__ import annotations

from mcustt.brokers.base import Broker


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._channels: set[str] = set()

    async def publish(self, session_id: str, message: str) -> None:
        if session_id in self._channels:
            self.deliver(session_id, message)

    async def subscribe(self, session_id: str) -> None:
        self._channels.add(session_id)

    async def unsubscribe(self, session_id: str) -> None:
        self._channels.discard(session_id)
