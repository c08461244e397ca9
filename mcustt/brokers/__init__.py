"""Brokers: Redis pub/sub when MCUSTT_REDIS_URL is set, else in-process."""

from __future__ import annotations

from mcustt.brokers.base import Broker, Deliver, Resync
from mcustt.config import Settings

__all__ = ["Broker", "Deliver", "Resync", "load_broker"]


def load_broker(settings: Settings, deliver: Deliver, resync: Resync) -> Broker:
    if settings.redis_url:
        from mcustt.brokers.redis import RedisBroker

        return RedisBroker(settings, deliver, resync)
    from mcustt.brokers.memory import MemoryBroker

    return MemoryBroker(settings, deliver, resync)
