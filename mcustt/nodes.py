"""This node's liveness (issue 13): an id per process and a heartbeat in the database.

A node killed with SIGKILL cannot release its producer claims; their 30 s leases would
refuse the producer's reconnect to another node for that long. Instead every claim names
its node, each node renews a ``nodes`` row every ``MCUSTT_NODE_HEARTBEAT_S`` (one small
write per node, none per audio frame), and a claim whose node has not beaten for
``MCUSTT_NODE_DEAD_AFTER_S`` is free: the producer's next connect, on any node, takes
it over in the claim's own conditional UPDATE (:mod:`mcustt.store.nodes`).

Why the database and not a Redis key with a TTL: the claim is decided by one UPDATE in
the database, atomically with the token burn; a liveness test in another system could
not be part of it (two nodes could both see the key gone and both admit), and the
single-node SQLite deployment has no Redis at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from mcustt.metrics import Metrics
from mcustt.store.repo import Repo

log = structlog.get_logger(__name__)

#: rows of nodes silent this long are deleted (their claims' leases ran out long ago)
PRUNE_AFTER_S = 24 * 3600.0


class NodeHeartbeat:
    """Registers the node, renews its heartbeat, and removes its row on a clean stop."""

    def __init__(
        self, repo: Repo, node_id: str, *, interval_s: float, metrics: Metrics | None = None
    ) -> None:
        self.repo = repo
        self.node_id = node_id
        self.interval_s = interval_s
        self.metrics = metrics
        self.started_at = time.time()
        #: when this node last wrote its heartbeat (monotonic clock)
        self.last_beat = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        if metrics is not None:
            metrics.node_heartbeat_age.set_function(self.age)

    async def start(self) -> None:
        """Write the first heartbeat before the node admits anyone (a claim it makes
        must name a node with a row), then keep beating in a task."""
        await self.repo.beat(self.node_id, started_at=self.started_at)
        self.last_beat = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="node-heartbeat")

    def age(self) -> float:
        """Seconds since this node's last successful heartbeat."""
        return time.monotonic() - self.last_beat

    async def _run(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.repo.beat(self.node_id, started_at=self.started_at)
            except Exception as exc:  # the database is down: keep trying, say so once a beat
                log.warning("node heartbeat failed", node_id=self.node_id, error=repr(exc))
                continue
            self.last_beat = time.monotonic()
            beats += 1
            if beats % 1000 == 1:  # now and then, not every beat
                with contextlib.suppress(Exception):
                    await self.repo.prune_nodes(silent_before=time.time() - PRUNE_AFTER_S)

    async def aclose(self) -> None:
        """Stop beating; remove the row (this node's claims were released by then)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.repo.forget_node(self.node_id)
