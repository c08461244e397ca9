"""Corrections of final lines: revisions, and the current text every reader sees.

**Storage.** A correction is a row of ``line_revisions`` (revision 1, 2…, its text, its
author, when). The line's own row keeps the recognizer's final untouched in ``text``
(revision 0, shown as the line's ``original``), and carries the latest correction's text
in ``revised_text``, written in the same transaction as the revision row. Why a copy on
the line rather than "latest revision" looked up at read time: the transcript is read
far more often than it is corrected (every replay page of every reconnecting viewer,
exports, summaries, questions), and those reads stay one indexed range scan of one
table, ``coalesce(revised_text, text)``, with no per-line subquery or join, while a
correction (rare, human-paced) pays one extra column write.

**Concurrency.** :meth:`RevisionQueries.revise_line` first takes the line's row lock
(a no-op UPDATE, as :func:`mcustt.store.sessions._lock_tenant` does for tenants), then
reads the previous text and the last revision number: two simultaneous corrections of
one line are serialized, numbered 1 and 2, and the later one's ``previousText`` is the
earlier one's text. The (session, seq, revision) unique constraint backs this up.

**Events.** The ``line.revised`` webhook event is recorded in the same transaction
(:func:`mcustt.store.webhooks.record_event`): stored if and only if the correction is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, update
from sqlmodel import col, select

from mcustt.store.db import Database
from mcustt.store.models import LineRevision, TranscriptLine
from mcustt.store.transcripts import current
from mcustt.store.webhooks import iso, record_event
from mcustt.wire import RevisionAuthor, WebhookLineRevisedData


@dataclass(frozen=True)
class RevisedLine:
    """A line and its corrections, oldest first. ``line.text`` is the original (the
    recognizer's final); :attr:`text` is the current text."""

    line: TranscriptLine
    revisions: list[LineRevision]

    @property
    def text(self) -> str:
        return self.revisions[-1].text if self.revisions else self.line.text


@dataclass(frozen=True)
class Revised:
    """What :meth:`RevisionQueries.revise_line` stored."""

    #: the line with every revision, the new one last
    line: RevisedLine
    #: the text before this correction (the original, or the previous correction)
    previous_text: str


class RevisionQueries:
    db: Database

    async def revise_line(
        self,
        *,
        tenant_id: str,
        session_id: str,
        seq: int,
        text: str,
        author: RevisionAuthor,
    ) -> Revised | None:
        """Store a correction of final ``seq`` (None: the session has no such line) and
        record its ``line.revised`` webhook event, in one transaction."""
        async with self.db.session() as s:
            locked = await s.exec(
                update(TranscriptLine)
                .where(col(TranscriptLine.session_id) == session_id, col(TranscriptLine.seq) == seq)
                .values(seq=TranscriptLine.seq)
            )
            if locked.rowcount != 1:
                await s.rollback()
                return None
            line = (
                await s.exec(
                    select(TranscriptLine)
                    .where(TranscriptLine.session_id == session_id, TranscriptLine.seq == seq)
                    .execution_options(populate_existing=True)
                )
            ).one()
            previous = line.revised_text if line.revised_text is not None else line.text
            last = await s.scalar(
                select(func.max(LineRevision.revision)).where(
                    LineRevision.session_id == session_id, LineRevision.seq == seq
                )
            )
            now = time.time()
            revision = LineRevision(
                session_id=session_id,
                seq=seq,
                revision=int(last or 0) + 1,
                text=text,
                author=author,
                created_at=now,
            )
            s.add(revision)
            line.revised_text = text
            s.add(line)
            data: WebhookLineRevisedData = {
                "sessionId": session_id,
                "seq": seq,
                "text": text,
                "previousText": previous,
                "revision": revision.revision,
                "author": author,
                "revisedAt": iso(now),
            }
            await record_event(
                s, tenant_id=tenant_id, event="line.revised", session_id=session_id, data=data
            )
            # Read under the row lock, before it is released: exactly the history this
            # correction completed, not a later one's.
            await s.flush()
            history = await s.exec(
                select(LineRevision)
                .where(LineRevision.session_id == session_id, LineRevision.seq == seq)
                .order_by(col(LineRevision.revision))
            )
            stored = RevisedLine(line, list(history.all()))
            await s.commit()
        return Revised(stored, previous)

    async def revised_line(self, session_id: str, seq: int) -> RevisedLine | None:
        """Line ``seq`` with its original text and every correction (None: no such line)."""
        async with self.db.session() as s:
            line = (
                await s.exec(
                    select(TranscriptLine).where(
                        TranscriptLine.session_id == session_id, TranscriptLine.seq == seq
                    )
                )
            ).first()
            if line is None:
                return None
            revisions = await s.exec(
                select(LineRevision)
                .where(LineRevision.session_id == session_id, LineRevision.seq == seq)
                .order_by(col(LineRevision.revision))
            )
            return RevisedLine(line, list(revisions.all()))

    async def corrected_lines(
        self, session_id: str, *, after: int, upto: int, limit: int
    ) -> list[TranscriptLine]:
        """At most ``limit`` corrected lines with ``after`` < seq <= ``upto``, in seq
        order, as readers see them (current text): what a viewer resuming at ``upto``
        re-reads so it also has corrections it missed while away. Reads the (small)
        revisions table for the seqs, then only those lines."""
        async with self.db.session() as s:
            seqs = (
                select(LineRevision.seq)
                .where(
                    LineRevision.session_id == session_id,
                    LineRevision.seq > after,
                    LineRevision.seq <= upto,
                )
                .distinct()
            )
            rows = await s.exec(
                select(TranscriptLine)
                .where(
                    TranscriptLine.session_id == session_id,
                    col(TranscriptLine.seq).in_(seqs),
                )
                .order_by(col(TranscriptLine.seq))
                .limit(limit)
            )
            return [current(line) for line in rows.all()]
