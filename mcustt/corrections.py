"""Corrections of final transcript lines (issue 16): store a revision, tell every viewer.

A correction is stored first (the revision, the line's current text and the
``line.revised`` webhook event in one transaction: :mod:`mcustt.store.revisions`), then
published on the session's channel as a transcript event with the line's seq and
``revised: true`` (:func:`mcustt.events.revised_event`), so every viewer on every node
replaces that line in place. An ended session has no viewers left: its correction is
stored (exports, summaries and questions read it) and reported by webhook only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from mcustt import events, wire
from mcustt.errors import NotFound
from mcustt.store.models import Session
from mcustt.store.repo import Repo
from mcustt.store.revisions import RevisedLine
from mcustt.store.transcripts import current
from mcustt.wire import ChannelMessage, ErrorCode, RevisionAuthor

log = structlog.get_logger(__name__)

#: Sends a message on a session's channel (:meth:`mcustt.fanout.Hub.publish`).
Publish = Callable[[str, ChannelMessage], Awaitable[None]]


def line_detail(revised: RevisedLine) -> wire.LineDetail:
    """``GET /api/sessions/:id/lines/:seq``: the current text, the original, the history."""
    line = revised.line
    doc: wire.LineDetail = {
        "seq": line.seq,
        "text": revised.text,
        "lang": line.lang,
        "ts": line.ts,
        "startMs": line.start_ms,
        "endMs": line.end_ms,
        "revision": revised.revisions[-1].revision if revised.revisions else 0,
        "original": {"text": line.text, "lang": line.lang, "ts": line.ts},
        "revisions": [
            {"revision": r.revision, "text": r.text, "author": r.author, "createdAt": r.created_at}
            for r in revised.revisions
        ],
    }
    if line.speaker:
        doc["speaker"] = line.speaker
    return doc


class Corrections:
    def __init__(self, repo: Repo, publish: Publish) -> None:
        self.repo = repo
        self.publish = publish

    async def line(self, session: Session, seq: int) -> wire.LineDetail:
        revised = await self.repo.revised_line(session.id, seq)
        if revised is None:
            raise NotFound(f"session {session.id} has no line {seq}", code=ErrorCode.LINE_NOT_FOUND)
        return line_detail(revised)

    async def revise(
        self, session: Session, seq: int, text: str, *, author: RevisionAuthor
    ) -> wire.LineDetail:
        """Store ``text`` as the new revision of final ``seq`` and publish it.

        Raises:
            NotFound: the session has no final ``seq`` (``LINE_NOT_FOUND``).
        """
        stored = await self.repo.revise_line(
            tenant_id=session.tenant_id,
            session_id=session.id,
            seq=seq,
            text=text,
            author=author,
        )
        if stored is None:
            raise NotFound(f"session {session.id} has no line {seq}", code=ErrorCode.LINE_NOT_FOUND)
        revision = stored.line.revisions[-1].revision
        log.info("line revised", seq=seq, revision=revision, author=author)
        if session.status == "live":
            try:
                await self.publish(session.id, events.revised_event(current(stored.line.line)))
            except Exception as exc:
                # Stored is what counts: a viewer that missed it gets it on its next
                # resume (corrected lines are re-sent), exports and summaries read it.
                log.warning("publishing a correction failed", seq=seq, error=repr(exc))
        return line_detail(stored.line)
