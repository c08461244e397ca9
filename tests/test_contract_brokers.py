"""The broker contract (mcustt.testing.broker) run against every broker mcustt ships.

Both are built through ``load_broker``, as the hub builds them, so the settings that pick
an implementation are exercised too.
"""

from __future__ import annotations

import itertools
import uuid
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from conftest import free_port

from mcustt.brokers import Broker, Deliver, Resync, load_broker
from mcustt.brokers.memory import MemoryBroker
from mcustt.brokers.redis import RedisBroker
from mcustt.config import Settings
from mcustt.testing.broker import BrokerContract, DistributedBrokerContract, Interrupt, MakeBroker


def _maker(settings: Settings, kind: type[Broker]) -> MakeBroker:
    def make(deliver: Deliver, resync: Resync) -> Broker:
        broker = load_broker(settings, deliver, resync)
        assert isinstance(broker, kind)
        return broker

    return make


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self) -> MakeBroker:
        return _maker(Settings(), MemoryBroker)


def _with_client_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return urlunsplit(parts._replace(query=urlencode({**query, "client_name": name})))


def _client_name(broker: Broker) -> str:
    assert broker.settings.redis_url
    return parse_qs(urlsplit(broker.settings.redis_url).query)["client_name"][0]


@pytest.mark.redis
class TestRedisBroker(DistributedBrokerContract):
    @pytest.fixture
    def make_broker(self, redis_url: str) -> MakeBroker:
        # A prefix of its own keeps this test's channels apart from concurrent runs'.
        prefix = "t" + uuid.uuid4().hex[:10]
        numbers = itertools.count(1)

        def make(deliver: Deliver, resync: Resync) -> Broker:
            # Each node names its connections, so `interrupt` cuts exactly one node's.
            url = _with_client_name(redis_url, f"{prefix}-node{next(numbers)}")
            settings = Settings(redis_url=url, redis_prefix=prefix)
            return _maker(settings, RedisBroker)(deliver, resync)

        return make

    @pytest.fixture
    def interrupt(self, redis_url: str) -> Interrupt:
        async def cut(broker: Broker) -> None:
            name = _client_name(broker)
            admin = aioredis.Redis.from_url(redis_url)
            try:
                clients = await admin.client_list(_type="pubsub")
                ids = [c["id"] for c in clients if c.get("name") == name]
                assert ids, f"no pub/sub connection named {name}"
                for client_id in ids:
                    await admin.client_kill_filter(_id=client_id)
            finally:
                await admin.aclose()

        return cut

    @pytest.fixture
    def make_unreachable_broker(self) -> MakeBroker:
        # A port nothing listens on: connections are refused at once.
        settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
        return _maker(settings, RedisBroker)


@pytest.mark.redis
async def test_a_burst_of_publishes_holds_a_bounded_number_of_connections(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's Redis pool has a bound: a burst waits for connections instead of
    opening (and then keeping) one per concurrent publish."""
    import asyncio

    from mcustt.brokers import redis as redis_broker

    monkeypatch.setattr(redis_broker, "MAX_CONNECTIONS", 4)
    prefix = "t" + uuid.uuid4().hex[:10]
    name = f"{prefix}-bounded"
    got: list[str] = []
    settings = Settings(redis_url=_with_client_name(redis_url, name), redis_prefix=prefix)
    broker = _maker(settings, RedisBroker)(lambda sid, msg: got.append(msg), lambda: None)
    await broker.start()
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await broker.subscribe("s1")
        await asyncio.gather(*(broker.publish("s1", f"m{i}") for i in range(200)))
        clients = [c for c in await admin.client_list() if c.get("name") == name]
        # the subscriber's connection and at most 4 for commands
        assert 1 < len(clients) <= 1 + 4, clients
        async with asyncio.timeout(10):
            while len(got) < 200:
                await asyncio.sleep(0.02)
        assert sorted(got) == sorted(f"m{i}" for i in range(200))
    finally:
        await admin.aclose()
        await broker.aclose()
