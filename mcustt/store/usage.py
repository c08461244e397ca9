"""Audio time per tenant per UTC day, added with one atomic upsert."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy.dialects import postgresql, sqlite

from mcustt.store.db import Database
from mcustt.store.models import Usage


def utc_day(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime("%Y-%m-%d")


class UsageQueries:
    db: Database

    async def add_usage(self, tenant_id: str, audio_ms: int, *, day: str | None = None) -> int:
        """Add audio time to the day's counter atomically; returns the new total (ms)."""
        day = day or utc_day()
        dialect = postgresql if not self.db.sqlite else sqlite
        stmt = dialect.insert(Usage).values(tenant_id=tenant_id, day=day, audio_ms=audio_ms)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "day"],
            set_={"audio_ms": Usage.__table__.c.audio_ms + stmt.excluded.audio_ms},  # type: ignore[attr-defined]
        )
        async with self.db.session() as s:
            await s.exec(stmt)
            await s.commit()
            row = await s.get(Usage, (tenant_id, day), populate_existing=True)
            return int(row.audio_ms) if row else audio_ms

    async def usage_ms(self, tenant_id: str, *, day: str | None = None) -> int:
        """The day's total (today when not given)."""
        day = day or utc_day()
        async with self.db.session() as s:
            row = await s.get(Usage, (tenant_id, day))
            return int(row.audio_ms) if row else 0
