"""The broker seam's contract, as a test suite any implementation can run against itself.

Subclass :class:`BrokerContract` in a test module (the subclass's name starts with
``Test``) and provide a ``make_broker`` fixture: a function that builds an *unstarted*
broker around the ``deliver`` and ``resync`` callbacks it is given; the suite starts and
closes what it builds::

    from mcustt.testing.broker import BrokerContract, MakeBroker

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        def make_broker(self) -> MakeBroker:
            settings = Settings(...)
            return lambda deliver, resync: MyBroker(settings, deliver, resync)

A broker that carries messages between nodes (Redis pub/sub) subclasses
:class:`DistributedBrokerContract` instead. Every broker its ``make_broker`` builds is
then one more node of the same deployment, and it provides two more fixtures:
``interrupt`` (cut a started broker's connection, as a network failure would) and
``make_unreachable_broker`` (brokers whose service is down).

What is asserted is what :mod:`mcustt.brokers.base` documents and what the hub in
:mod:`mcustt.fanout` relies on: ``subscribe`` is in effect when it returns (the hub
joins a viewer *before* reading the replay, so a final published right after must
arrive), messages arrive verbatim and in order per session, sessions are isolated,
``unsubscribe`` stops delivery and is idempotent, callbacks run on the event loop,
``resync`` follows a reconnect (and nothing else), ``aclose`` leaves no task behind and
may be called twice, ``check`` passes while the broker works and raises while it cannot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from mcustt.brokers.base import Broker, Deliver, Resync

__all__ = [
    "BrokerContract",
    "DistributedBrokerContract",
    "Interrupt",
    "MakeBroker",
    "Node",
    "StartNode",
]

#: Builds an unstarted broker around the callbacks the suite records with.
MakeBroker = Callable[[Deliver, Resync], Broker]
#: Cuts a started broker's connection to its service, as a network failure would.
Interrupt = Callable[[Broker], Awaitable[None]]

#: How long a published message may take to arrive.
DELIVERY_TIMEOUT_S = 5.0
#: How long a broker may take to notice a cut connection, reconnect and resync.
RECONNECT_TIMEOUT_S = 15.0
#: How long to wait before concluding that something was *not* delivered. Cross-session
#: order is not part of the contract, so a later message on another session proves nothing.
QUIET_S = 0.2


class Node:
    """One broker, and everything it delivered: a node of the deployment under test."""

    def __init__(self, make_broker: MakeBroker) -> None:
        self.delivered: list[tuple[str, str]] = []
        self.resyncs = 0
        #: callbacks that ran outside the event loop (the contract says: never)
        self.off_loop: list[str] = []
        self._changed = asyncio.Event()
        self.broker = make_broker(self._deliver, self._resync)

    def _deliver(self, session_id: str, message: str) -> None:
        self._on_loop("deliver")
        self.delivered.append((session_id, message))
        self._changed.set()

    def _resync(self) -> None:
        self._on_loop("resync")
        self.resyncs += 1
        self._changed.set()

    def _on_loop(self, callback: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.off_loop.append(callback)

    def messages(self, session_id: str) -> list[str]:
        """What was delivered for ``session_id``, in delivery order."""
        return [message for sid, message in self.delivered if sid == session_id]

    async def wait_until(self, done: Callable[[], bool], what: str, within_s: float) -> None:
        """Wait until ``done()`` holds; fail saying ``what`` did not happen otherwise."""
        try:
            async with asyncio.timeout(within_s):
                while True:
                    self._changed.clear()
                    if done():
                        return
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.broker.name} broker: waited {within_s:g}s for {what} in vain; "
                f"delivered so far: {self.delivered[-10:]!r}, resyncs: {self.resyncs}"
            ) from None

    async def receive(
        self, session_id: str, count: int, within_s: float = DELIVERY_TIMEOUT_S
    ) -> list[str]:
        """Wait for ``count`` messages of ``session_id`` in all; returns every one so far."""
        await self.wait_until(
            lambda: len(self.messages(session_id)) >= count,
            f"{count} message(s) for {session_id!r}",
            within_s,
        )
        return self.messages(session_id)


#: Starts one more node (the suite closes it at teardown).
StartNode = Callable[[], Awaitable[Node]]


def _message(session_id: str, n: int) -> str:
    # The shape the hub publishes: JSON text, serialized once.
    return json.dumps({"type": "transcript", "seq": n, "isFinal": True, "text": f"line {n}"})


class BrokerContract:
    """What every broker promises. Provide ``make_broker`` (see the module docstring)."""

    @pytest.fixture
    def make_broker(self) -> MakeBroker:
        raise NotImplementedError(
            "subclass BrokerContract and provide a make_broker fixture returning a "
            "function (deliver, resync) -> unstarted Broker"
        )

    @pytest.fixture
    async def start_node(self, make_broker: MakeBroker) -> AsyncIterator[StartNode]:
        started: list[Node] = []

        async def start() -> Node:
            node = Node(make_broker)
            await node.broker.start()
            started.append(node)
            return node

        yield start
        for node in reversed(started):
            await node.broker.aclose()

    @pytest.fixture
    async def node(self, start_node: StartNode) -> Node:
        return await start_node()

    # -- identity and health ---------------------------------------------------------------

    async def test_has_a_name(self, node: Node) -> None:
        # The hub reports it (``/readyz``, startup log).
        assert isinstance(node.broker.name, str) and node.broker.name

    async def test_check_passes_while_it_works(self, node: Node) -> None:
        await node.broker.check()

    # -- delivery --------------------------------------------------------------------------

    async def test_a_publish_right_after_subscribe_is_delivered(self, node: Node) -> None:
        await node.broker.subscribe("s1")
        await node.broker.publish("s1", _message("s1", 1))
        assert await node.receive("s1", 1) == [_message("s1", 1)]
        assert node.delivered == [("s1", _message("s1", 1))]

    async def test_messages_arrive_verbatim(self, node: Node) -> None:
        sent = [
            "{}",
            json.dumps({"text": 'Grüße, 你好, emoji 🎙️, quote " and \\ backslash'}),
            json.dumps({"text": "ünïcode"}, ensure_ascii=False),
            json.dumps({"text": "two\nlines\r\n\ttabbed"}),
            json.dumps({"text": "word " * 13_000}),  # 64 KiB: a long final with word timings
        ]
        await node.broker.subscribe("s1")
        for message in sent:
            await node.broker.publish("s1", message)
        assert await node.receive("s1", len(sent)) == sent

    async def test_messages_of_a_session_arrive_in_order_once_each(self, node: Node) -> None:
        sent = [_message("s1", n) for n in range(1, 201)]
        await node.broker.subscribe("s1")
        for message in sent:
            await node.broker.publish("s1", message)
        assert await node.receive("s1", len(sent)) == sent
        await asyncio.sleep(QUIET_S)
        assert node.messages("s1") == sent

    async def test_sessions_are_isolated(self, node: Node) -> None:
        await node.broker.subscribe("a")
        await node.broker.subscribe("b")
        for n in range(1, 21):
            for sid in ("a", "b", "unwatched"):
                await node.broker.publish(sid, _message(sid, n))
        assert await node.receive("a", 20) == [_message("a", n) for n in range(1, 21)]
        assert await node.receive("b", 20) == [_message("b", n) for n in range(1, 21)]
        await asyncio.sleep(QUIET_S)
        assert {sid for sid, _ in node.delivered} == {"a", "b"}
        assert len(node.delivered) == 40

    async def test_many_sessions_subscribed_at_once(self, node: Node) -> None:
        # The hub joins different sessions concurrently (only one session is serialized).
        sessions = [f"s{i}" for i in range(25)]
        await asyncio.gather(*(node.broker.subscribe(sid) for sid in sessions))
        for sid in sessions:
            await node.broker.publish(sid, _message(sid, 1))
        for sid in sessions:
            assert await node.receive(sid, 1) == [_message(sid, 1)]

    async def test_publish_without_subscribers_is_fine(self, node: Node) -> None:
        await node.broker.publish("nobody", _message("nobody", 1))
        await asyncio.sleep(QUIET_S)
        assert node.delivered == []

    async def test_callbacks_run_on_the_event_loop(self, node: Node) -> None:
        await node.broker.subscribe("s1")
        await node.broker.publish("s1", _message("s1", 1))
        await node.receive("s1", 1)
        assert node.off_loop == []

    # -- unsubscribe -----------------------------------------------------------------------

    async def test_unsubscribe_stops_delivery(self, node: Node) -> None:
        await node.broker.subscribe("s1")
        await node.broker.publish("s1", _message("s1", 1))
        await node.receive("s1", 1)
        await node.broker.unsubscribe("s1")
        await node.broker.publish("s1", _message("s1", 2))
        await asyncio.sleep(QUIET_S)
        assert node.messages("s1") == [_message("s1", 1)]
        # ... and subscribing again resumes it, without the message sent in between.
        await node.broker.subscribe("s1")
        await node.broker.publish("s1", _message("s1", 3))
        assert await node.receive("s1", 2) == [_message("s1", 1), _message("s1", 3)]
        await asyncio.sleep(QUIET_S)
        assert node.messages("s1") == [_message("s1", 1), _message("s1", 3)]

    async def test_unsubscribe_leaves_other_sessions_alone(self, node: Node) -> None:
        await node.broker.subscribe("a")
        await node.broker.subscribe("b")
        await node.broker.unsubscribe("a")
        await node.broker.publish("b", _message("b", 1))
        assert await node.receive("b", 1) == [_message("b", 1)]

    async def test_unsubscribe_is_idempotent(self, node: Node) -> None:
        await node.broker.unsubscribe("never-subscribed")
        await node.broker.subscribe("s1")
        await node.broker.unsubscribe("s1")
        await node.broker.unsubscribe("s1")
        await node.broker.subscribe("s1")
        await node.broker.publish("s1", _message("s1", 1))
        assert await node.receive("s1", 1) == [_message("s1", 1)]

    # -- resync and lifecycle --------------------------------------------------------------

    async def test_no_resync_without_a_gap(self, node: Node) -> None:
        # A resync makes every viewer of the node replay from the store: never for nothing.
        await node.broker.subscribe("s1")
        await node.broker.publish("s1", _message("s1", 1))
        await node.receive("s1", 1)
        await asyncio.sleep(QUIET_S)
        assert node.resyncs == 0

    async def test_aclose_is_idempotent_and_leaves_no_task(self, make_broker: MakeBroker) -> None:
        before = asyncio.all_tasks()
        node = Node(make_broker)
        await node.broker.start()
        await node.broker.subscribe("s1")
        await node.broker.publish("s1", _message("s1", 1))
        await node.receive("s1", 1)
        await node.broker.aclose()
        await node.broker.aclose()
        for _ in range(3):
            await asyncio.sleep(0)  # let cancelled tasks finish unwinding
        left = {t for t in asyncio.all_tasks() - before if not t.done()}
        assert not left, f"tasks left running after aclose: {left!r}"


class DistributedBrokerContract(BrokerContract):
    """What a broker between nodes promises on top of :class:`BrokerContract`.

    Every broker ``make_broker`` builds is another node of one deployment. Also provide
    ``interrupt`` and ``make_unreachable_broker`` (see the module docstring).
    """

    @pytest.fixture
    def interrupt(self) -> Interrupt:
        raise NotImplementedError(
            "provide an interrupt fixture: an async function that cuts a started "
            "broker's connection to its service"
        )

    @pytest.fixture
    def make_unreachable_broker(self) -> MakeBroker:
        raise NotImplementedError(
            "provide a make_unreachable_broker fixture: like make_broker, for a service "
            "that is down"
        )

    async def test_a_publish_on_another_node_right_after_subscribe_is_delivered(
        self, start_node: StartNode
    ) -> None:
        viewer_node, producer_node = await start_node(), await start_node()
        await viewer_node.broker.subscribe("s1")
        await producer_node.broker.publish("s1", _message("s1", 1))
        assert await viewer_node.receive("s1", 1) == [_message("s1", 1)]

    async def test_every_subscribed_node_gets_each_message_once_in_order(
        self, start_node: StartNode
    ) -> None:
        a, b, producer = await start_node(), await start_node(), await start_node()
        await a.broker.subscribe("s1")
        await b.broker.subscribe("s1")
        sent = [_message("s1", n) for n in range(1, 101)]
        for message in sent[:-1]:
            await producer.broker.publish("s1", message)
        # A subscribed node's own publishes reach it and the others alike.
        await a.broker.publish("s1", sent[-1])
        assert await a.receive("s1", len(sent)) == sent
        assert await b.receive("s1", len(sent)) == sent
        await asyncio.sleep(QUIET_S)
        assert a.messages("s1") == b.messages("s1") == sent
        assert producer.delivered == []  # not subscribed

    async def test_unsubscribe_on_one_node_leaves_the_others_subscribed(
        self, start_node: StartNode
    ) -> None:
        a, b = await start_node(), await start_node()
        await a.broker.subscribe("s1")
        await b.broker.subscribe("s1")
        await a.broker.unsubscribe("s1")
        await a.broker.publish("s1", _message("s1", 1))
        assert await b.receive("s1", 1) == [_message("s1", 1)]
        await asyncio.sleep(QUIET_S)
        assert a.delivered == []

    async def test_a_closed_node_gets_nothing_more(self, start_node: StartNode) -> None:
        a, b = await start_node(), await start_node()
        await a.broker.subscribe("s1")
        await a.broker.aclose()
        await b.broker.publish("s1", _message("s1", 1))
        await asyncio.sleep(QUIET_S)
        assert a.delivered == []

    async def test_a_reconnect_resyncs_and_keeps_the_subscriptions(
        self, start_node: StartNode, interrupt: Interrupt
    ) -> None:
        a, producer = await start_node(), await start_node()
        await a.broker.subscribe("s1")
        await a.broker.subscribe("s2")
        await producer.broker.publish("s1", _message("s1", 1))
        await a.receive("s1", 1)
        await interrupt(a.broker)
        await a.wait_until(
            lambda: a.resyncs >= 1, "a resync after a reconnect", RECONNECT_TIMEOUT_S
        )
        # Resync means "the gap is over, replay what you missed": from then on, every
        # subscription delivers again.
        await producer.broker.publish("s1", _message("s1", 2))
        await producer.broker.publish("s2", _message("s2", 1))
        assert await a.receive("s1", 2) == [_message("s1", 1), _message("s1", 2)]
        assert await a.receive("s2", 1) == [_message("s2", 1)]
        await a.broker.check()
        assert a.off_loop == []

    async def test_unreachable_service(self, make_unreachable_broker: MakeBroker) -> None:
        node = Node(make_unreachable_broker)
        # The node still starts (it keeps trying); /readyz reports the outage through check.
        await node.broker.start()
        try:
            with pytest.raises(Exception):  # noqa: B017 - the base documents no narrower type
                await node.broker.check()
            # A publish neither fails nor waits on the outage: the message is kept for
            # when the service is back (a caption pipeline must not stall on it).
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                await node.broker.publish("s1", _message("s1", 1))
        finally:
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                await node.broker.aclose()
