"""Tables. Times are unix seconds (float) so SQLite and PostgreSQL agree exactly.

Statuses are typed with the wire's Literals (the column is a plain VARCHAR: ``sa_type``
keeps SQLModel from trying to map a Literal), so a builder copies them out unconverted.

Every change here needs an Alembic revision (``alembic/versions``); the server refuses
to start on a database whose revision differs from the code's head.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint, false
from sqlmodel import AutoString, Field, SQLModel

from mcustt.wire import (
    DocumentStatus,
    JobKind,
    JobStatus,
    ProfanityFilter,
    RevisionAuthor,
    SessionStatus,
    SummaryStatus,
    WebhookDeliveryStatus,
)


class Meta(SQLModel, table=True):
    """Process-wide values shared by every node (e.g. the generated JWT secret)."""

    __tablename__ = "meta"
    key: str = Field(primary_key=True, max_length=64)
    value: str


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"
    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    #: sha256 of the API key; the key itself is never stored.
    key_hash: str = Field(max_length=64, unique=True, index=True)
    #: the first characters of the key, so operators can tell keys apart.
    key_prefix: str = Field(max_length=24)
    max_sessions: int = 50
    daily_minutes_cap: int = 6000
    brand_name: str | None = Field(default=None, max_length=200)
    accent_color: str | None = Field(default=None, max_length=32)
    logo_url: str | None = Field(default=None, max_length=2000)
    allowed_origins: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    disabled: bool = False
    created_at: float
    updated_at: float
    #: issue 15: default contextual keywords of every session (NULL on older rows: none)
    keywords: list[str] | None = Field(default=None, sa_column=Column(JSON))
    #: issue 17: every new session's profanity filter when it asks for none (NULL: off)
    profanity_filter: ProfanityFilter | None = Field(
        default=None, max_length=8, sa_type=AutoString(length=8)
    )


class Session(SQLModel, table=True):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_tenant_status", "tenant_id", "status"),)
    id: str = Field(primary_key=True, max_length=16)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=32)
    title: str | None = Field(default=None, max_length=500)
    source_lang: str = Field(default="en-US", max_length=35)
    auto_detect: bool = True
    #: "live" until ended (by stop, DELETE, daily cap, or abandonment); then "ended".
    status: SessionStatus = Field(default="live", max_length=16, sa_type=AutoString(length=16))
    end_reason: str | None = Field(default=None, max_length=64)
    detected_lang: str | None = Field(default=None, max_length=35)
    owner_secret_hash: str = Field(max_length=64)
    #: jti of the one ingest token that may still connect; cleared (burned) on connect.
    ingest_jti: str | None = Field(default=None, max_length=64)
    #: the connected producer (any node) and how long its claim holds without renewal.
    producer_id: str | None = Field(default=None, max_length=64)
    producer_lease_until: float | None = None
    #: the node holding the producer claim (issue 13): once its heartbeat is stale the
    #: claim may be taken over before the lease runs out. NULL: lease only.
    producer_node: str | None = Field(default=None, max_length=32)
    last_seq: int = 0
    audio_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    created_at: float
    updated_at: float
    ended_at: float | None = None
    #: issue 17: the session's caption latency figures (``wire.CaptionLatency``), written
    #: every few seconds by the node running its pipeline so any node can report them.
    #: NULL: no figures yet.
    caption_latency: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    #: issue 15: candidate languages (<= 3), the session's own keywords (the tenant's are
    #: merged in when a stream opens), noise suppression. NULL on older rows: none.
    language_hints: list[str] | None = Field(default=None, sa_column=Column(JSON))
    keywords: list[str] | None = Field(default=None, sa_column=Column(JSON))
    reduce_noise: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    #: issue 17: the profanity filter resolved at creation (the session's own, else the
    #: tenant's default, else off); applied to interims and finals before they are
    #: stored, and to the summary
    profanity_filter: ProfanityFilter = Field(
        default="off",
        max_length=8,
        sa_type=AutoString(length=8),
        sa_column_kwargs={"server_default": "off"},
    )
    #: issue 17: every final's events carry its word timings (viewers may also ask per
    #: connection with ``?words=1``)
    words: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class TranscriptLine(SQLModel, table=True):
    __tablename__ = "transcript_lines"
    __table_args__ = (
        UniqueConstraint("session_id", "seq", name="uq_lines_session_seq"),
        Index("uq_lines_session_commit", "session_id", "commit_key", unique=True),
    )
    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="sessions.id", max_length=16, index=True)
    seq: int
    text: str
    lang: str = Field(max_length=35)
    #: wall clock of the final, unix milliseconds (the wire ``ts``).
    ts: int = Field(sa_column=Column(BigInteger, nullable=False))
    #: where the words are in the session's audio (ms since its first audio byte).
    start_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    end_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    speaker: str | None = Field(default=None, max_length=64)
    #: issue 16: the latest correction's text (NULL: never corrected). ``text`` keeps the
    #: recognizer's final untouched; see :mod:`mcustt.store.revisions`.
    revised_text: str | None = None
    #: issue 17: the recognized words with their timings in session time, as the wire's
    #: ``words`` (``[{"text","startMs","endMs","confidence"}]``); NULL on older lines
    #: and for engines that give none
    words: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    #: issue 17: the engine's confidence in the line, 0 to 1 (NULL: it gave none)
    confidence: float | None = None
    #: issue 13: the pipeline's key for this final, so that a commit retried after a
    #: lost answer finds its line instead of storing it twice (NULL: older lines)
    commit_key: str | None = Field(default=None, max_length=32)


class Summary(SQLModel, table=True):
    __tablename__ = "summaries"
    session_id: str = Field(primary_key=True, foreign_key="sessions.id", max_length=16)
    status: SummaryStatus = Field(default="pending", max_length=16, sa_type=AutoString(length=16))
    model: str | None = Field(default=None, max_length=100)
    lang: str | None = Field(default=None, max_length=35)
    content: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: str | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    updated_at: float


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_idempotency"),
        Index("ix_jobs_claim", "status", "run_after"),
    )
    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=32, index=True)
    kind: JobKind = Field(max_length=32, sa_type=AutoString(length=32))
    status: JobStatus = Field(default="queued", max_length=16, sa_type=AutoString(length=16))
    session_id: str | None = Field(default=None, max_length=16)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: str | None = None
    attempts: int = 0
    max_attempts: int = 3
    #: a running job whose lease passed was abandoned by a dead worker: claimable again.
    lease_until: float | None = None
    lease_owner: str | None = Field(default=None, max_length=64)
    run_after: float = 0.0
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str | None = Field(default=None, max_length=64)
    created_at: float
    updated_at: float


class Usage(SQLModel, table=True):
    """Audio time per tenant per UTC day (the daily minutes cap)."""

    __tablename__ = "usage"
    tenant_id: str = Field(primary_key=True, foreign_key="tenants.id", max_length=32)
    day: str = Field(primary_key=True, max_length=10)
    audio_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class SpeakerName(SQLModel, table=True):
    """The display name of one participant of a session (issue 14): set from the ingest
    token when its track connects, or by the owner (``PUT .../speakers/:id``). Lines
    store the participant id (``transcript_lines.speaker``); exports and summaries look
    the current name up here, so a rename also renames what was already said."""

    __tablename__ = "speakers"
    session_id: str = Field(primary_key=True, foreign_key="sessions.id", max_length=16)
    speaker_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=100)
    updated_at: float


class ProducerTrack(SQLModel, table=True):
    """One participant's track in a session (issue 14): its single-use ingest token and
    its producer claim, as the session row holds them for the mixed producer."""

    __tablename__ = "producer_tracks"
    __table_args__ = (Index("ix_producer_tracks_tenant_lease", "tenant_id", "lease_until"),)
    session_id: str = Field(primary_key=True, foreign_key="sessions.id", max_length=16)
    participant_id: str = Field(primary_key=True, max_length=64)
    #: copied from the session: the concurrent-ingest cap counts a tenant's tracks
    tenant_id: str = Field(foreign_key="tenants.id", max_length=32)
    #: jti of the one participant-bound token that may still connect; cleared on connect.
    ingest_jti: str | None = Field(default=None, max_length=64)
    #: the connected producer (any node) and how long its claim holds without renewal.
    producer_id: str | None = Field(default=None, max_length=64)
    lease_until: float | None = None
    #: the node holding the claim, as ``Session.producer_node`` (issue 13)
    node_id: str | None = Field(default=None, max_length=32)
    created_at: float
    updated_at: float


class Node(SQLModel, table=True):
    """A running ``mcustt serve`` process (issue 13), one row per process start. Its
    heartbeat is renewed every ``MCUSTT_NODE_HEARTBEAT_S``; a producer claim whose node's
    heartbeat is older than ``MCUSTT_NODE_DEAD_AFTER_S`` may be taken over at once,
    without waiting out the claim's lease. One write per node per beat, none per frame."""

    __tablename__ = "nodes"
    id: str = Field(primary_key=True, max_length=32)
    started_at: float
    heartbeat_at: float


class BridgeKey(SQLModel, table=True):
    """A Jitsi bridge credential (issue 14): scoped to the tenant's ``/transcribe``
    endpoint only, revocable, stored as a SHA-256 digest like tenant keys."""

    __tablename__ = "bridge_keys"
    id: str = Field(primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=32, index=True)
    name: str | None = Field(default=None, max_length=200)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    #: the first characters of the key, so the tenant can tell keys apart.
    key_prefix: str = Field(max_length=24)
    created_at: float
    revoked_at: float | None = None
    last_used_at: float | None = None


class JitsiSession(SQLModel, table=True):
    """Which mcustt session a Jitsi meeting (the bridge's ``sessionId``) feeds, per tenant.

    The row outlives its session: a meeting that connects again after its session ended
    gets a new session and the row points there. ``lease_until`` is renewed by every
    connected bridge socket (any node), so a node can tell whether the meeting still has
    a bridge before it ends the session after the grace period.
    """

    __tablename__ = "jitsi_sessions"
    tenant_id: str = Field(primary_key=True, foreign_key="tenants.id", max_length=32)
    jitsi_session_id: str = Field(primary_key=True, max_length=200)
    session_id: str = Field(foreign_key="sessions.id", max_length=16, index=True)
    lease_until: float | None = None
    created_at: float
    updated_at: float


# -- webhooks and triggers (issue 16) ------------------------------------------------------


class WebhookEndpoint(SQLModel, table=True):
    """A tenant's registered receiver. ``secret`` is the Standard Webhooks ``whsec_``
    secret itself, not a hash: every delivery is signed with it (HMAC needs the key), so
    it is stored usable; it is shown once, on create and rotate, and never logged."""

    __tablename__ = "webhook_endpoints"
    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=32, index=True)
    url: str = Field(max_length=2000)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    secret: str = Field(max_length=100)
    #: set when the receiver answered 410 Gone: nothing more is sent to it.
    disabled: bool = False
    created_at: float
    updated_at: float


class WebhookEvent(SQLModel, table=True):
    """The outbox: one row per event, written in the transaction of the change it reports.
    Its id (``evt_…``) is the ``webhook-id`` of every delivery of it (the receivers'
    dedup key) and the stable ``id`` of the polling triggers."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_tenant_type", "tenant_id", "type", "created_at"),)
    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=32)
    type: str = Field(max_length=32)
    session_id: str | None = Field(default=None, max_length=16)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    #: recorded for a one-off callback only: not fanned out, not in the triggers.
    callback_only: bool = False
    created_at: float


class WebhookDelivery(SQLModel, table=True):
    """One event to one receiver: a registered endpoint (``endpoint_id``), or a one-off
    callback whose ``url`` and ``secret`` the caller gave (``endpoint_id`` NULL).

    ``seq`` (autoincrement) orders the deliveries of an endpoint's session; the public
    id is ``id``. A claim takes the row under a lease (``lease_owner``/``lease_until``)
    like a job; the outcome is written fenced on the owner."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
        Index("ix_webhook_deliveries_claim", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "seq"),
    )
    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=32)
    event_id: str = Field(foreign_key="webhook_events.id", max_length=40, index=True)
    endpoint_id: str | None = Field(default=None, foreign_key="webhook_endpoints.id", max_length=40)
    #: a callback's own receiver; NULL for an endpoint's delivery (it reads the endpoint's).
    url: str | None = Field(default=None, max_length=2000)
    secret: str | None = Field(default=None, max_length=100)
    session_id: str | None = Field(default=None, max_length=16)
    status: WebhookDeliveryStatus = Field(
        default="pending", max_length=16, sa_type=AutoString(length=16)
    )
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float | None = None
    created_at: float
    updated_at: float
    delivered_at: float | None = None


class TTSAudio(SQLModel, table=True):
    """A text-to-speech result (issue 16): the OGG/Opus file itself, so any node serves
    its signed URL. Deleted once ``expires_at`` passes (retention, or lazily when asked)."""

    __tablename__ = "tts_audio"
    id: str = Field(primary_key=True, max_length=24)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=32, index=True)
    #: the seed-000 ``/v1/tts`` caller's own ids (free text, not our sessions)
    session_id: str | None = Field(default=None, max_length=128)
    message_id: str | None = Field(default=None, max_length=128)
    voice: str = Field(max_length=64)
    format: str = Field(max_length=16)
    audio: bytes
    size: int
    created_at: float
    expires_at: float = Field(index=True)


# -- corrections (issue 16) ------------------------------------------------------------------


class LineRevision(SQLModel, table=True):
    """One correction of a final line (revision 1, 2…; the original is the line's own
    ``text``). ``author`` is who corrected it ("tenant" or "owner"), never a secret."""

    __tablename__ = "line_revisions"
    __table_args__ = (
        UniqueConstraint("session_id", "seq", "revision", name="uq_line_revisions_seq_revision"),
    )
    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="sessions.id", max_length=16)
    seq: int
    revision: int
    text: str
    author: RevisionAuthor = Field(max_length=16, sa_type=AutoString(length=16))
    created_at: float


# -- meeting AI: documents (issue 16) ----------------------------------------------------------


class Document(SQLModel, table=True):
    """A markdown document written from a session's transcript to a tenant's prompt; a
    ``document`` job fills it in. ``callback_secret`` signs the POST to ``callback_url``
    (kept in the clear: an HMAC key must be, like webhook endpoints' secrets)."""

    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_session", "session_id", "created_at"),)
    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", max_length=32)
    session_id: str = Field(foreign_key="sessions.id", max_length=16)
    prompt: str
    callback_url: str | None = Field(default=None, max_length=2000)
    callback_secret: str | None = Field(default=None, max_length=100)
    status: DocumentStatus = Field(default="pending", max_length=16, sa_type=AutoString(length=16))
    markdown: str | None = None
    model: str | None = Field(default=None, max_length=100)
    error: str | None = None
    created_at: float
    updated_at: float


# -- file transcription (issue 15) -------------------------------------------------------------


class FileAudioChunk(SQLModel, table=True):
    """A slice (≤ 1 MiB) of an uploaded or fetched file waiting for its ``transcription``
    job. Kept in the database, not on a node's disk, so any node can run the job; in
    slices so neither the write nor the read ever holds the whole file. Deleted when
    the job is done (or has failed for good)."""

    __tablename__ = "file_audio_chunks"
    audio_id: str = Field(primary_key=True, max_length=40)
    idx: int = Field(primary_key=True)
    data: bytes
