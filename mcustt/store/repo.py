"""The store: every query of the service, behind one object over one database.

Each aggregate's queries live in their own module and are mixed in here, so callers
hold a single :class:`Repo` (``state.repo``) and no SQL lives outside ``mcustt.store``:

* :mod:`mcustt.store.tenants`: tenant rows;
* :mod:`mcustt.store.sessions`: sessions, the capped insert, the producer claim, ending,
  housekeeping;
* :mod:`mcustt.store.transcripts`: transcript lines;
* :mod:`mcustt.store.summaries`: session summaries;
* :mod:`mcustt.store.jobs`: the durable job queue;
* :mod:`mcustt.store.usage`: audio time per tenant per day;
* :mod:`mcustt.store.speakers`: speaker names per session;
* :mod:`mcustt.store.tracks`: participant tracks' tokens and producer claims;
* :mod:`mcustt.store.bridges`: Jitsi bridge credentials and the meeting → session map.

``mcustt.testing.store.StoreContract`` is the behaviour callers rely on, run against
SQLite and PostgreSQL.
"""

from __future__ import annotations

from mcustt.store.bridges import BridgeQueries
from mcustt.store.db import Database
from mcustt.store.jobs import JobQueries
from mcustt.store.sessions import Capped, ProducerClaim, SessionQueries, SessionSnapshot
from mcustt.store.speakers import SpeakerQueries
from mcustt.store.summaries import SummaryQueries
from mcustt.store.tenants import TenantQueries
from mcustt.store.tracks import TrackQueries
from mcustt.store.transcripts import TranscriptQueries
from mcustt.store.usage import UsageQueries, utc_day

__all__ = ["Capped", "ProducerClaim", "Repo", "SessionSnapshot", "utc_day"]


class Repo(
    TenantQueries,
    SessionQueries,
    TranscriptQueries,
    SummaryQueries,
    JobQueries,
    UsageQueries,
    SpeakerQueries,
    TrackQueries,
    BridgeQueries,
):
    def __init__(self, db: Database) -> None:
        self.db = db
