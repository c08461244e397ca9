"""Transcript lines: appended in seq order (gap-free per session), read back in order.

Lines are read back as readers see them: a corrected line's ``text`` is its latest
correction (see :func:`current` and :mod:`mcustt.store.revisions`), so exports, replays,
summaries and questions all use the corrected transcript.
"""

from __future__ import annotations

import time

from sqlalchemy import update
from sqlmodel import col, select

from mcustt.store.db import Database
from mcustt.store.models import Session, TranscriptLine


def current(line: TranscriptLine) -> TranscriptLine:
    """The line as readers see it: ``text`` is its latest correction, if it has one.

    A corrected line is returned as a copy that belongs to no database session (its
    ``revised_text`` still set, so a reader can tell), never as the stored row with
    ``text`` overwritten: nothing can flush the copy over the original.
    """
    if line.revised_text is None:
        return line
    fields = {name: getattr(line, name) for name in TranscriptLine.model_fields}
    fields["text"] = line.revised_text
    return TranscriptLine(**fields)


class TranscriptQueries:
    db: Database

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

    async def lines_after(self, session_id: str, after: int, *, limit: int) -> list[TranscriptLine]:
        """At most ``limit`` lines with seq > ``after``, in seq order (a replay page)."""
        async with self.db.session() as s:
            rows = await s.exec(
                select(TranscriptLine)
                .where(TranscriptLine.session_id == session_id, TranscriptLine.seq > after)
                .order_by(col(TranscriptLine.seq))
                .limit(limit)
            )
            return [current(line) for line in rows.all()]

    async def lines(
        self, session_id: str, *, from_seq: int | None = None, to_seq: int | None = None
    ) -> list[TranscriptLine]:
        """The lines in seq order, optionally within [from_seq, to_seq]."""
        query = select(TranscriptLine).where(TranscriptLine.session_id == session_id)
        if from_seq is not None:
            query = query.where(TranscriptLine.seq >= from_seq)
        if to_seq is not None:
            query = query.where(TranscriptLine.seq <= to_seq)
        async with self.db.session() as s:
            rows = await s.exec(query.order_by(col(TranscriptLine.seq)))
            return [current(line) for line in rows.all()]
