"""The store: every query of the service, behind one object over one database.

Each aggregate's queries live in their own module and are mixed in here, so callers
hold a single :class:`Repo` (``state.repo``) and no SQL lives outside ``mcustt.store``:

* :mod:`mcustt.store.tenants`: tenant rows;
* :mod:`mcustt.store.sessions`: sessions, the capped insert, the producer claim, ending,
  housekeeping;
* :mod:`mcustt.store.transcripts`: transcript lines;
* :mod:`mcustt.store.revisions`: corrections of transcript lines (issue 16);
* :mod:`mcustt.store.summaries`: session summaries;
* :mod:`mcustt.store.jobs`: the durable job queue;
* :mod:`mcustt.store.usage`: audio time per tenant per day;
* :mod:`mcustt.store.speakers`: speaker names per session;
* :mod:`mcustt.store.tracks`: participant tracks' tokens and producer claims;
* :mod:`mcustt.store.nodes`: node heartbeats, which free a dead node's claims (issue 13);
* :mod:`mcustt.store.bridges`: Jitsi bridge credentials and the meeting → session map.
* :mod:`mcustt.store.webhooks`: webhook endpoints, the event outbox, deliveries.
* :mod:`mcustt.store.tts`: text-to-speech audio until it expires.
* :mod:`mcustt.store.documents`: documents written from transcripts (issue 16).
* :mod:`mcustt.store.files`: transcribed files' sessions, files waiting for their job
  (issue 15).

``mcustt.testing.store.StoreContract`` is the behaviour callers rely on, run against
SQLite and PostgreSQL.
"""

from __future__ import annotations

from mcustt.store.bridges import BridgeQueries
from mcustt.store.db import Database
from mcustt.store.documents import DocumentQueries
from mcustt.store.files import FileQueries
from mcustt.store.jobs import JobQueries
from mcustt.store.nodes import NodeQueries
from mcustt.store.revisions import RevisionQueries
from mcustt.store.sessions import Capped, ProducerClaim, SessionQueries, SessionSnapshot
from mcustt.store.speakers import SpeakerQueries
from mcustt.store.summaries import SummaryQueries
from mcustt.store.tenants import TenantQueries
from mcustt.store.tracks import TrackQueries
from mcustt.store.transcripts import TranscriptQueries
from mcustt.store.tts import TTSQueries
from mcustt.store.usage import UsageQueries, utc_day
from mcustt.store.webhooks import WebhookQueries

__all__ = ["Capped", "ProducerClaim", "Repo", "SessionSnapshot", "utc_day"]


class Repo(
    TenantQueries,
    SessionQueries,
    TranscriptQueries,
    RevisionQueries,
    SummaryQueries,
    JobQueries,
    UsageQueries,
    SpeakerQueries,
    TrackQueries,
    NodeQueries,
    BridgeQueries,
    TTSQueries,
    WebhookQueries,
    DocumentQueries,
    FileQueries,
):
    def __init__(self, db: Database) -> None:
        self.db = db
