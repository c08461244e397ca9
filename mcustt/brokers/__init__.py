"""Brokers: Redis pub/sub when MCUSTT_REDIS_URL is set, else in-process."""

from __future__ import annotations

from mcustt.brokers.base import Broker, Deliver, Resync
from mcustt.config import Settings
from mcustt.importer import import_from_string

__all__ = ["Broker", "Deliver", "Resync", "load_broker"]

#: By name, imported only when chosen (the redis client stays unloaded without Redis).
BROKERS: dict[str, str] = {
    "memory": "mcustt.brokers.memory:MemoryBroker",
    "redis": "mcustt.brokers.redis:RedisBroker",
}


def load_broker(settings: Settings, deliver: Deliver, resync: Resync) -> Broker:
    cls = import_from_string(BROKERS["redis" if settings.redis_url else "memory"])
    broker: Broker = cls(settings, deliver, resync)
    return broker
