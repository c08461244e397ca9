"""The broker seam: per-session channels of already-serialized events between nodes.

A node subscribes to a session's channel once, however many of its viewers watch that
session (the hub in :mod:`mcustt.fanout` fans out locally). Messages are JSON text,
serialized once by the publisher, never re-encoded per viewer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from mcustt.config import Settings

#: (session_id, raw JSON message) -> None; must not block (put_nowait only).
Deliver = Callable[[str, str], None]
#: Called after a reconnect: messages may have been missed, viewers replay from the store.
Resync = Callable[[], None]


class Broker(ABC):
    """Publish to and subscribe to session channels.

    Implementations call ``deliver`` for every message on a subscribed channel, from the
    event loop, in publish order per session, and ``resync`` whenever delivery may have
    had a gap (a reconnect), never otherwise. :mod:`mcustt.testing.broker` checks an
    implementation against this contract.
    """

    name: str

    def __init__(self, settings: Settings, deliver: Deliver, resync: Resync) -> None:
        self.settings = settings
        self.deliver = deliver
        self.resync = resync

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect; called once in the app's lifespan.

        A service that is down does not fail the start: the broker keeps trying in the
        background and :meth:`check` reports the outage meanwhile.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Disconnect and cancel the broker's tasks (safe to call again)."""

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Raise if the broker is unreachable (``/readyz``)."""

    @abstractmethod
    async def publish(self, session_id: str, message: str) -> None:
        """Send one message to every node subscribed to the session.

        A broker between nodes does not fail or wait on an outage of its service: it
        keeps the message (bounded, in order behind any kept before) and sends it once
        the service answers, delivering it to this node's subscribers meanwhile.

        Raises:
            Exception: the message could not even be kept (the caller logs; finals are
                persisted, viewers replay them from the store).
        """

    @abstractmethod
    async def subscribe(self, session_id: str) -> None:
        """Start delivering the session's messages; returns once delivery is in effect,
        so that anything published afterwards is delivered.

        The hub calls it once per session until :meth:`unsubscribe` (never twice at once
        for one session); different sessions may be subscribed concurrently.
        """

    @abstractmethod
    async def unsubscribe(self, session_id: str) -> None:
        """Stop delivering the session's messages (idempotent)."""
