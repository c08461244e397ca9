"""Queries shared by the pipeline, fan-out and REST handlers."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from mcustt.store.db import Database
from mcustt.store.models import Session, TranscriptLine, Usage


def utc_day(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime("%Y-%m-%d")


class Repo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def lines_after(self, session_id: str, after: int, *, limit: int) -> list[TranscriptLine]:
        async with self.db.session() as s:
            rows = await s.exec(
                select(TranscriptLine)
                .where(TranscriptLine.session_id == session_id, TranscriptLine.seq > after)
                .order_by(col(TranscriptLine.seq))
                .limit(limit)
            )
            return list(rows.all())

    async def lines(
        self, session_id: str, *, from_seq: int | None = None, to_seq: int | None = None
    ) -> list[TranscriptLine]:
        query = select(TranscriptLine).where(TranscriptLine.session_id == session_id)
        if from_seq is not None:
            query = query.where(TranscriptLine.seq >= from_seq)
        if to_seq is not None:
            query = query.where(TranscriptLine.seq <= to_seq)
        async with self.db.session() as s:
            rows = await s.exec(query.order_by(col(TranscriptLine.seq)))
            return list(rows.all())

    async def append_final(
        self,
        session_id: str,
        *,
        seq: int,
        text: str,
        lang: str,
        ts: int,
        start_ms: int,
        end_ms: int,
        audio_ms: int,
    ) -> TranscriptLine:
        """Persist one final and advance the session's seq in one transaction.

        The (session_id, seq) unique constraint turns a second writer into an error
        instead of a duplicate line.
        """
        line = TranscriptLine(
            session_id=session_id,
            seq=seq,
            text=text,
            lang=lang,
            ts=ts,
            start_ms=start_ms,
            end_ms=end_ms,
        )
        async with self.db.session() as s:
            s.add(line)
            await s.exec(
                update(Session)
                .where(col(Session.id) == session_id)
                .values(last_seq=seq, audio_ms=audio_ms, updated_at=time.time())
            )
            await s.commit()
        return line

    async def set_detected_lang(self, session_id: str, lang: str) -> None:
        async with self.db.session() as s:
            await s.exec(
                update(Session).where(col(Session.id) == session_id).values(detected_lang=lang)
            )
            await s.commit()

    async def set_audio_ms(self, session_id: str, audio_ms: int) -> None:
        async with self.db.session() as s:
            await s.exec(
                update(Session).where(col(Session.id) == session_id).values(audio_ms=audio_ms)
            )
            await s.commit()

    async def add_usage(self, tenant_id: str, audio_ms: int, *, day: str | None = None) -> int:
        """Add audio time to today's counter atomically; returns the new total (ms)."""
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
        day = day or utc_day()
        async with self.db.session() as s:
            row = await s.get(Usage, (tenant_id, day))
            return int(row.audio_ms) if row else 0
