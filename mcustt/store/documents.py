"""Document rows (issue 16): created pending with the job that writes them, then
completed once, with their webhook event and callback in the same transaction.

Completion is conditional on the row still being ``pending``: a job run twice (a lease
that expired under a slow model, a second node taking over) completes the document,
and queues its event and callback, exactly once.
"""

from __future__ import annotations

import time

from sqlalchemy import update
from sqlmodel import col, select

from mcustt import wire
from mcustt.store.db import Database
from mcustt.store.models import Document, Job
from mcustt.store.webhooks import iso, record_callback, record_event


def callback_body(doc: Document) -> wire.DocumentCallback:
    """What a finished document's callback (and its ``document.ready`` event) carries."""
    body: wire.DocumentCallback = {
        "status": "success" if doc.status == "ready" else "failure",
        "sessionId": doc.session_id,
        "docId": doc.id,
        "createdAt": iso(doc.updated_at),
    }
    if doc.status == "ready":
        body["documentText"] = doc.markdown or ""
        body["model"] = doc.model or ""
    else:
        body["error"] = doc.error or "failed"
    return body


class DocumentQueries:
    db: Database

    async def insert_document(self, doc: Document, job: Job) -> None:
        """The pending document and the job that will write it, in one transaction (no
        document is left pending without a job)."""
        async with self.db.session() as s:
            s.add(doc)
            s.add(job)
            await s.commit()

    async def get_document(self, session_id: str, doc_id: str) -> Document | None:
        async with self.db.session() as s:
            rows = await s.exec(
                select(Document).where(Document.id == doc_id, Document.session_id == session_id)
            )
            return rows.first()

    async def document_by_id(self, doc_id: str) -> Document | None:
        async with self.db.session() as s:
            return await s.get(Document, doc_id)

    async def finish_document(
        self,
        doc_id: str,
        *,
        markdown: str | None = None,
        model: str | None = None,
        error: str | None = None,
    ) -> bool:
        """Complete a pending document: ready with ``markdown``, or failed with ``error``.

        In the same transaction: the ``document.ready`` event for the tenant's webhooks
        (when ready) and the signed POST to the document's callback URL (either way).
        False, and nothing written, when it was no longer pending."""
        ready = error is None
        now = time.time()
        async with self.db.session() as s:
            done = await s.exec(
                update(Document)
                .where(col(Document.id) == doc_id, col(Document.status) == "pending")
                .values(
                    status="ready" if ready else "failed",
                    markdown=markdown if ready else None,
                    model=model,
                    error=error,
                    updated_at=now,
                )
            )
            if done.rowcount != 1:
                await s.rollback()
                return False
            doc = await s.get(Document, doc_id, populate_existing=True)
            assert doc is not None
            body = callback_body(doc)
            if ready:
                await record_event(
                    s,
                    tenant_id=doc.tenant_id,
                    event="document.ready",
                    session_id=doc.session_id,
                    data=body,
                )
            if doc.callback_url and doc.callback_secret:
                await record_callback(
                    s,
                    tenant_id=doc.tenant_id,
                    session_id=doc.session_id,
                    url=doc.callback_url,
                    secret=doc.callback_secret,
                    event="document.ready" if ready else "document.failed",
                    data=body,
                )
            await s.commit()
            return True
