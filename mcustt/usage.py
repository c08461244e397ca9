"""Audio time per tenant per day: counted in memory, written once per interval per tenant.

Every producer's audio counts against its tenant's ``dailyMinutesCap``. Writing each
session's share to the database every few seconds made usage the costliest thing a
stream did after receiving its frames (an upsert per session per write, hundreds of
sessions a node). The meter instead sums what this node's sessions streamed and writes
one upsert per tenant and day every ``FLUSH_S``; the cap is checked against the last
total the database returned plus what this node has not written yet, so it is exact for
one node and at most ``FLUSH_S`` of other nodes' audio late across nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import structlog

from mcustt.store.repo import Repo, utc_day

log = structlog.get_logger(__name__)

#: How often a node writes its tenants' usage.
FLUSH_S: Final = 5.0

Key = tuple[str, str]  # (tenant id, UTC day)


class UsageMeter:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        #: audio not yet written, per (tenant, day)
        self._pending: dict[Key, int] = {}
        #: the database's total as of this node's last read or write
        self._known: dict[Key, int] = {}
        self._lock = asyncio.Lock()

    def add(self, tenant_id: str, audio_ms: int) -> int:
        """Count audio (no I/O); returns the tenant's usage today as this node knows it."""
        key = (tenant_id, utc_day())
        pending = self._pending.get(key, 0) + audio_ms
        self._pending[key] = pending
        return self._known.get(key, 0) + pending

    async def total(self, tenant_id: str) -> int:
        """Today's usage: the database's total (every node's writes) plus this node's
        unwritten audio."""
        key = (tenant_id, utc_day())
        stored = await self.repo.usage_ms(tenant_id, day=key[1])
        self._known[key] = stored
        return stored + self._pending.get(key, 0)

    async def flush(self) -> None:
        """Write what is pending (one upsert per tenant and day). On failure the audio
        stays pending for the next flush: none is lost or counted twice."""
        async with self._lock:
            items = list(self._pending.items())
            self._pending = {}
            for i, (key, ms) in enumerate(items):
                tenant_id, day = key
                try:
                    self._known[key] = await self.repo.add_usage(tenant_id, ms, day=day)
                except BaseException:
                    for k, v in items[i:]:  # this key and the ones not reached
                        self._pending[k] = self._pending.get(k, 0) + v
                    raise
            # Days that are over are not read again.
            today = utc_day()
            for key in [k for k in self._known if k[1] != today and k not in self._pending]:
                del self._known[key]

    async def run(self) -> None:
        """The node's flush loop (owned by the app: cancelled at shutdown, after which
        :meth:`flush` runs once more)."""
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("usage write failed; retrying", error=repr(exc))

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
