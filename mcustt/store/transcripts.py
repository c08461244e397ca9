"""Transcript lines: appended in seq order (gap-free per session), read back in order.

Lines are read back as readers see them: a corrected line's ``text`` is its latest
correction (see :func:`current` and :mod:`mcustt.store.revisions`), so exports, replays,
summaries and questions all use the corrected transcript.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import case, update
from sqlalchemy.exc import IntegrityError
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
        seq: int | None = None,
        text: str,
        lang: str,
        ts: int,
        start_ms: int,
        end_ms: int,
        audio_ms: int,
        speaker: str | None = None,
        words: Sequence[Mapping[str, Any]] | None = None,
        confidence: float | None = None,
        commit_key: str | None = None,
    ) -> TranscriptLine:
        """Persist one final and advance the session's seq in one transaction.

        Without ``seq`` (the pipelines) the store allocates the next one: the session
        row's ``last_seq + 1``, taken by an ``UPDATE ... RETURNING`` in the transaction
        that inserts the line. The row lock (PostgreSQL) or write lock (SQLite) it takes
        is held until commit, so the tracks of one session, on any nodes, get gap-free
        seqs in the order their finals are persisted, and a line with seq n is visible
        once n+1 is. ``speaker``: the participant id of the track (None: mixed).
        ``words`` / ``confidence`` (issue 17): the wire's word timings in session time
        and the engine's confidence (None: none given).

        ``commit_key`` (issue 13) makes the write idempotent: when a line of the session
        has that key already, it is returned and nothing is written. A commit retried
        after the database went away may have landed the first time (its COMMIT went
        through, the answer was lost): the retry then finds it, where it would otherwise
        store the final a second time under the next seq. The unique index refuses the
        retry's insert (rolling back its seq) and only then is the line looked up, so
        the usual write costs no extra query.

        ``audio_ms`` only ever grows the session's audio time: parallel tracks each
        report their own position. The (session_id, seq) unique constraint turns a second
        writer of an explicit ``seq`` into an error instead of a duplicate line.
        """
        now = time.time()
        # Parallel tracks report their own positions: keep the furthest.
        grown = case((col(Session.audio_ms) < audio_ms, audio_ms), else_=col(Session.audio_ms))
        try:
            return await self._insert_final(
                session_id,
                seq,
                grown,
                now,
                TranscriptLine(
                    session_id=session_id,
                    seq=0,  # set once allocated
                    text=text,
                    lang=lang,
                    ts=ts,
                    start_ms=start_ms,
                    end_ms=end_ms,
                    speaker=speaker,
                    words=[dict(w) for w in words] if words is not None else None,
                    confidence=confidence,
                    commit_key=commit_key,
                ),
            )
        except IntegrityError:
            if commit_key is None:
                raise
            async with self.db.session() as s:
                landed = await s.exec(
                    select(TranscriptLine).where(
                        TranscriptLine.session_id == session_id,
                        TranscriptLine.commit_key == commit_key,
                    )
                )
                earlier = landed.first()
            if earlier is None:
                raise  # another constraint (an explicit seq written twice)
            return earlier

    async def _insert_final(
        self, session_id: str, seq: int | None, grown: Any, now: float, line: TranscriptLine
    ) -> TranscriptLine:
        """:meth:`append_final`'s transaction: the seq (allocated unless given), the
        session's audio time, the line."""
        async with self.db.session() as s:
            if seq is None:
                allocated = await s.exec(
                    update(Session)
                    .where(col(Session.id) == session_id)
                    .values(last_seq=col(Session.last_seq) + 1, audio_ms=grown, updated_at=now)
                    .returning(col(Session.last_seq))
                )
                row = allocated.first()
                if row is None:
                    raise LookupError(f"no session {session_id!r}")
                seq = int(row[0])
            else:
                await s.exec(
                    update(Session)
                    .where(col(Session.id) == session_id)
                    .values(last_seq=seq, audio_ms=grown, updated_at=now)
                )
            line.seq = seq
            s.add(line)
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
