"""Node heartbeats (issue 13): one ``nodes`` row per running process, and the SQL
condition that tells a producer claim held by a dead node.

A claim names its node (``Session.producer_node``, ``ProducerTrack.node_id``). It is
free when nobody holds it, when its lease has run out, or, sooner, when its node's row
says the node stopped beating: that test is part of the claim's one conditional UPDATE,
so two nodes racing to take over a dead node's claim still admit exactly one producer.
A claim whose node has no row (an older node, or a row pruned long ago) falls back to
its lease: absence is never taken as death.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select

from mcustt.store.db import Database
from mcustt.store.models import Node


def node_dead(node_column: Any, *, now: float, dead_after_s: float) -> ColumnElement[bool]:
    """True where ``node_column`` names a node whose last heartbeat is older than
    ``dead_after_s`` (correlated: usable in a claim's UPDATE ... WHERE)."""
    return (
        select(Node.id)
        .where(col(Node.id) == node_column, col(Node.heartbeat_at) < now - dead_after_s)
        .exists()
    )


class NodeQueries:
    db: Database

    async def beat(self, node_id: str, *, started_at: float) -> None:
        """Insert or renew this node's heartbeat row (one small write per beat)."""
        now = time.time()
        dialect = postgresql if not self.db.sqlite else sqlite
        stmt = dialect.insert(Node).values(id=node_id, started_at=started_at, heartbeat_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"heartbeat_at": now})
        async with self.db.session() as s:
            await s.exec(stmt)
            await s.commit()

    async def node_heartbeat(self, node_id: str) -> float | None:
        """When ``node_id`` last beat (None: no row)."""
        async with self.db.session() as s:
            node = await s.get(Node, node_id, populate_existing=True)
            return node.heartbeat_at if node is not None else None

    async def forget_node(self, node_id: str) -> None:
        """A node stopping cleanly removes its row (its claims were released already)."""
        async with self.db.session() as s:
            await s.exec(delete(Node).where(col(Node.id) == node_id))
            await s.commit()

    async def prune_nodes(self, *, silent_before: float) -> int:
        """Delete rows of nodes silent since ``silent_before`` (long dead: their claims'
        leases have run out, so the rows decide nothing any more)."""
        async with self.db.session() as s:
            result = await s.exec(delete(Node).where(col(Node.heartbeat_at) < silent_before))
            await s.commit()
            return int(result.rowcount or 0)

    async def touch_node(self, node_id: str, heartbeat_at: float) -> None:
        """Set a node's heartbeat time (tests: make a node look dead without killing it)."""
        async with self.db.session() as s:
            await s.exec(
                update(Node).where(col(Node.id) == node_id).values(heartbeat_at=heartbeat_at)
            )
            await s.commit()
