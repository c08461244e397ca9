"""The vocabulary of the wire, defined once: every JSON shape a client sends or receives.

* **Request bodies** are pydantic models: the server validates with them, and their
  constraints (``Field(pattern=…)``, ``Literal``) are the OpenAPI request schemas.
* **Responses and events** are ``TypedDict``\\ s: the server's builders return them (plain
  dicts, nothing to convert on the hot path), ``mcustt.client`` types its answers with
  them, and :mod:`mcustt.openapi` turns them into the response schemas with pydantic's
  ``TypeAdapter(...).json_schema``.
* **Codes**: :class:`ErrorCode` (the envelope's ``code``, and error frames), and
  :class:`CloseCode` (WebSocket close codes), and the typed statuses.

Adding a field to a response is a change here plus the builder that fills it (mypy
checks the builder against the type), and the OpenAPI document and the client follow.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import Annotated, Any, Literal, NotRequired, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)
from typing_extensions import TypedDict

# -- codes ---------------------------------------------------------------------------------


class ErrorCode(enum.StrEnum):
    """Every ``code`` the server puts in an error envelope or an ``error`` frame."""

    # generic, one per HTTP status (the root error classes' defaults)
    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    CONFLICT = "CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    URI_TOO_LONG = "URI_TOO_LONG"
    HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    UNPROCESSABLE = "UNPROCESSABLE"
    RATE_LIMITED = "RATE_LIMITED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"
    HTTP_ERROR = "HTTP_ERROR"
    # credentials
    ADMIN_DISABLED = "ADMIN_DISABLED"
    MISSING_ADMIN_TOKEN = "MISSING_ADMIN_TOKEN"
    INVALID_ADMIN_TOKEN = "INVALID_ADMIN_TOKEN"
    MISSING_TENANT_KEY = "MISSING_TENANT_KEY"
    INVALID_TENANT_KEY = "INVALID_TENANT_KEY"
    TENANT_DISABLED = "TENANT_DISABLED"
    INVALID_TOKEN = "INVALID_TOKEN"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    TOKEN_BURNED = "TOKEN_BURNED"
    WRONG_TOKEN_SCOPE = "WRONG_TOKEN_SCOPE"
    WRONG_CREDENTIAL = "WRONG_CREDENTIAL"
    INVALID_OWNER_SECRET = "INVALID_OWNER_SECRET"
    ORIGIN_FORBIDDEN = "ORIGIN_FORBIDDEN"
    # resources and their state
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    LINE_NOT_FOUND = "LINE_NOT_FOUND"  # corrections (issue 16)
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    DOCUMENT_NOT_FOUND = "DOCUMENT_NOT_FOUND"
    SESSION_ENDED = "SESSION_ENDED"
    ALREADY_CONNECTED = "ALREADY_CONNECTED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    # caps
    SESSION_CAP = "SESSION_CAP"
    INGEST_CAP = "INGEST_CAP"
    DAILY_CAP_REACHED = "DAILY_CAP_REACHED"
    # WebSocket frames and connections
    INVALID_AUDIO_FORMAT = "INVALID_AUDIO_FORMAT"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    UNKNOWN_CONTROL = "UNKNOWN_CONTROL"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    SERVER_SHUTDOWN = "SERVER_SHUTDOWN"
    # issue 13: this node is draining (SIGTERM) or saturated: go to another node
    NODE_DRAINING = "NODE_DRAINING"
    NODE_OVERLOADED = "NODE_OVERLOADED"
    # issue 13: the database is unreachable (503 + Retry-After; a producer whose finals
    # could not be stored in time: fatal error frame, close 1013)
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    # engines
    RECOGNIZER_FAILED = "RECOGNIZER_FAILED"
    SUMMARIZER_FAILED = "SUMMARIZER_FAILED"
    SUMMARIZER_UNCONFIGURED = "SUMMARIZER_UNCONFIGURED"
    UNSUPPORTED_LANGUAGE = "UNSUPPORTED_LANGUAGE"  # issue 15: a hint the engine can't serve
    # webhooks and outbound fetches (issue 16)
    URL_NOT_ALLOWED = "URL_NOT_ALLOWED"
    AUDIO_FETCH_FAILED = "AUDIO_FETCH_FAILED"  # issue 15: an audio_url that did not deliver
    WEBHOOK_NOT_FOUND = "WEBHOOK_NOT_FOUND"
    DELIVERY_NOT_FOUND = "DELIVERY_NOT_FOUND"
    # text to speech (issue 16)
    TTS_FAILED = "TTS_FAILED"
    TTS_UNAVAILABLE = "TTS_UNAVAILABLE"
    UNKNOWN_VOICE = "UNKNOWN_VOICE"
    TTS_AUDIO_NOT_FOUND = "TTS_AUDIO_NOT_FOUND"
    SIGNED_URL_INVALID = "SIGNED_URL_INVALID"
    SIGNED_URL_EXPIRED = "SIGNED_URL_EXPIRED"
    # diarization (issue 15): reported in a file transcript's ``diarization`` status
    DIARIZATION_UNAVAILABLE = "DIARIZATION_UNAVAILABLE"
    DIARIZATION_FAILED = "DIARIZATION_FAILED"
    # configuration (CLI and startup, never a response)
    CONFIG = "CONFIG"
    SCHEMA_MISMATCH = "SCHEMA_MISMATCH"
    # -- jitsi bridge (issue 14)
    INVALID_BRIDGE_KEY = "INVALID_BRIDGE_KEY"
    BRIDGE_KEY_REVOKED = "BRIDGE_KEY_REVOKED"
    BRIDGE_KEY_NOT_FOUND = "BRIDGE_KEY_NOT_FOUND"
    JITSI_SESSION_NOT_FOUND = "JITSI_SESSION_NOT_FOUND"


#: The code of each HTTP status the router itself answers (404, 405…) and the error
#: classes default to.
HTTP_STATUS_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    414: ErrorCode.URI_TOO_LONG,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.UNPROCESSABLE,
    429: ErrorCode.RATE_LIMITED,
    431: ErrorCode.HEADERS_TOO_LARGE,
    503: ErrorCode.UNAVAILABLE,
}


class CloseCode(enum.IntEnum):
    """WebSocket close codes (§15) the server sends."""

    NORMAL = 1000  # STOP, idle timeout, session ended
    UNSUPPORTED_DATA = 1003  # BAD_REQUEST, INVALID_AUDIO_FORMAT, binary on a subscribe socket
    POLICY_VIOLATION = 1008  # credentials, caps, a slow consumer
    MESSAGE_TOO_BIG = 1009  # a frame over 1 MB, a control message over 8 KB
    INTERNAL_ERROR = 1011  # the pipeline or the engine failed
    SERVICE_RESTART = 1012  # the node is shutting down
    TRY_AGAIN_LATER = 1013  # rate limited, unavailable


#: The close *reasons* the server sends with a normal close.
class CloseReason(enum.StrEnum):
    STOP = "STOP"
    IDLE_TIMEOUT = "IDLE_TIMEOUT"
    SESSION_ENDED = "SESSION_ENDED"
    PIPELINE_STOPPED = "PIPELINE_STOPPED"
    SLOW_CONSUMER = "SLOW_CONSUMER"


SessionStatus = Literal["live", "ended"]
#: issue 17: what happens to profane words in captions, the transcript and the summary
ProfanityFilter = Literal["off", "mask", "remove"]
SummaryStatus = Literal["pending", "ready", "failed"]
JobStatus = Literal["queued", "running", "ready", "failed"]
JobKind = Literal["session_summary", "batch_summary", "document", "transcription"]
ReadyStatus = Literal["ready", "unready", "draining"]  # draining: issue 13, SIGTERM
Want = Literal["summary", "transcript"]

# -- field types -------------------------------------------------------------------------------

LANG_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
COLOR_PATTERN = r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$"
#: ``*``, or scheme://host[:port] with a DNS name, an IPv4 or a bracketed IPv6 address.
ORIGIN_PATTERN = (
    r"^(\*|https?://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?)$"
)
URL_PATTERN = r"^https?://"
#: The largest integer a request body may carry (PostgreSQL's BIGINT).
MAX_INT = 2**63 - 1
#: The largest seq there can be: the seq columns are INTEGER (32 bits on PostgreSQL), so
#: a larger bound in a query would overflow there rather than match nothing.
MAX_SEQ = 2**31 - 1
#: What no database can store in text: NUL (PostgreSQL refuses it) and lone surrogates
#: (not encodable as UTF-8, so no driver can send them).
UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> str:
    if UNSTORABLE_TEXT.search(value):
        raise ValueError("must not contain NUL characters or lone surrogates")
    return value


#: Free text a client sends and the server stores (titles, names, subtitles…).
Text = Annotated[str, AfterValidator(storable_text)]

#: What a browser's ``Origin`` looks like, before IDNA: scheme, host (a name, which may
#: be non-ASCII, or a bracketed IPv6 address), an optional port, and nothing else.
_ORIGIN_INPUT = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>[^\x00-\x20\x7f/\\?#@:;,'\"<>\[\]`{}|^%]+|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_DNS_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str:
    """``*``, or the serialized origin a browser sends for ``value``: scheme and host in
    lower case, an IDN host in punycode, the scheme's default port dropped.

    Raises:
        ValueError: anything that is not exactly scheme://host[:port] (a path, a trailing
            newline, ``;``, quotes or spaces would end up in a CSP header).
    """
    if value == "*":
        return value
    match = _ORIGIN_INPUT.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not an origin (scheme://host[:port], or *)")
    scheme, host, port = match["scheme"].lower(), match["host"], match["port"]
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{value!r}: the scheme must be http or https")
    if not host.startswith("["):
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise ValueError(f"{value!r}: the host is not a valid domain name") from None
        if not _DNS_NAME.fullmatch(host) or len(host) > 253:
            raise ValueError(f"{value!r}: the host is not a valid domain name")
    else:
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            raise ValueError(f"{value!r}: the host is not an IPv6 address") from None
    if port is not None:
        number = int(port)
        if not 0 < number <= 65535:
            raise ValueError(f"{value!r}: the port must be 1-65535")
        if number != _DEFAULT_PORTS[scheme]:
            return f"{scheme}://{host}:{number}"
    return f"{scheme}://{host}"


#: A BCP-47 language code such as ``en-US``.
#: At most 35 characters: what RFC 5646 (4.4.1) asks implementations to store, and the
#: width of the language columns.
Lang = Annotated[str, Field(pattern=LANG_PATTERN, max_length=35, examples=["en-US"])]
#: Unix seconds (float).
Time = Annotated[float, Field(description="Unix time, seconds.")]
#: A browser origin (``https://example.com``) or ``*``. Stored normalized (see
#: :func:`normalize_origin`); the schema's pattern is that stored form.
Origin = Annotated[
    str,
    Field(
        examples=["https://example.com"],
        max_length=2000,
        description="scheme://host[:port] or `*`; an IDN host is stored in punycode.",
        json_schema_extra={"pattern": ORIGIN_PATTERN},
    ),
    AfterValidator(normalize_origin),
]
SessionId = Annotated[str, Field(description="The session id (10 letters and digits).")]

# -- language hints, keywords, noise reduction (issue 15) ------------------------------------

#: At most this many candidate languages reach a recognizer; extras are dropped.
MAX_LANGUAGE_HINTS = 3
#: Contextual keywords per tenant default, per session, and merged (session first).
MAX_KEYWORDS = 100
MAX_KEYWORD_CHARS = 100
_LANG_RE = re.compile(LANG_PATTERN)


def _canonical_lang(code: str) -> str:
    """BCP-47's conventional case: ``ko``, ``en-US``, ``zh-Hant-TW`` (engines compare
    codes exactly, and ``en-us`` from a URL must match ``en-US`` from a list)."""
    first, *rest = code.split("-")
    out = [first.lower()]
    for part in rest:
        if len(part) == 2 and part.isalpha():
            out.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())
        else:
            out.append(part.lower())
    return "-".join(out)


def parse_language_hints(value: object) -> list[str]:
    """Candidate languages from a list or a comma string (``"ko,en"``): canonical case,
    blanks and duplicates dropped, at most :data:`MAX_LANGUAGE_HINTS` (extras dropped).

    ``None`` and ``""`` are no hints (``[]``).

    Raises:
        ValueError: a code that is not BCP-47/ISO-shaped (``en``, ``ko-KR``), or a value
            that is neither a string nor a list of strings.
    """
    if value is None:
        return []
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("language hints are a list of codes or a comma-separated string")
    hints: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError("each language hint is a string such as 'en' or 'ko-KR'")
        code = item.strip()
        if not code:
            continue
        if len(code) > 35 or not _LANG_RE.match(code):
            raise ValueError(
                f"{code[:40]!r} is not a language code (BCP-47 or ISO 639, e.g. 'en', 'ko-KR')"
            )
        code = _canonical_lang(code)
        if code not in hints:
            hints.append(code)
    return hints[:MAX_LANGUAGE_HINTS]


def merge_keywords(*lists: list[str] | None) -> list[str]:
    """Keyword lists merged in order (the session's before the tenant's): trimmed,
    blanks and case-insensitive duplicates dropped, at most :data:`MAX_KEYWORDS`."""
    seen: set[str] = set()
    out: list[str] = []
    for phrases in lists:
        for phrase in phrases or ():
            text = " ".join(phrase.split())
            key = text.casefold()
            if text and key not in seen:
                seen.add(key)
                out.append(text)
                if len(out) == MAX_KEYWORDS:
                    return out
    return out


def _split_hints(value: object) -> object:
    # Before validation: a comma string becomes the list the schema describes; a list
    # longer than the cap is cut (extras dropped, not refused); bad codes are refused.
    if value is None:
        return None
    if isinstance(value, str | list | tuple):
        if isinstance(value, list | tuple) and len(value) > 64:
            raise ValueError("at most 64 language hints are read (3 are used)")
        return parse_language_hints(value)
    return value


#: Up to 3 candidate languages: a list (``["ko","en"]``) or a comma string (``"ko,en"``).
LanguageHints = Annotated[
    list[str],
    BeforeValidator(_split_hints),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "array",
                    "items": {"type": "string", "pattern": LANG_PATTERN, "maxLength": 35},
                    "maxItems": 64,
                },
                {"type": "string", "maxLength": 2000},
            ],
            "description": "Candidate languages (BCP-47/ISO 639): a list or a comma-separated "
            "string such as `ko,en`. At most 3 are used (extras dropped); the recognizer "
            "must support them (else 400 `UNSUPPORTED_LANGUAGE`).",
            "examples": [["ko", "en"], "ko,en"],
        }
    ),
]
#: One contextual keyword or phrase (a name, a product, jargon) to favour.
Keyword = Annotated[Text, Field(min_length=1, max_length=MAX_KEYWORD_CHARS)]
Keywords = Annotated[
    list[Keyword],
    Field(
        max_length=MAX_KEYWORDS,
        description="Phrases the recognizer should favour (names, jargon), at most 100 "
        "of at most 100 characters. Which engines honour them: see the README.",
        examples=[["mcustt", "Kubernetes"]],
    ),
]


# -- request bodies ----------------------------------------------------------------------------


#: issue 17: the request field (tenant default, session option)
ProfanityFilterOption = Annotated[
    ProfanityFilter,
    Field(
        description="Profane words in interims, finals (so the stored transcript, replay "
        "and exports) and the summary: `off` (kept), `mask` (letters after the first "
        "become `*`: `f***`) or `remove` (the word and its timing dropped). The original "
        "is not stored when filtering is on.",
        examples=["mask"],
    ),
]


class Body(BaseModel):
    """A JSON request body: unknown fields are ignored (forward compatibility)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Brand(Body):
    brandName: Annotated[Text, Field(max_length=200)] | None = None
    accentColor: Annotated[str, Field(pattern=COLOR_PATTERN, examples=["#0b5"])] | None = None
    logoUrl: Annotated[Text, Field(max_length=2000, pattern=URL_PATTERN)] | None = None


class TenantCreate(Body):
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    maxSessions: Annotated[int, Field(ge=1, le=100_000)] | None = None
    dailyMinutesCap: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    brand: Brand | None = None
    allowedOrigins: list[Origin] | None = None
    keywords: Keywords | None = None  # issue 15: default contextual keywords
    profanityFilter: ProfanityFilterOption | None = None  # issue 17: sessions' default


class TenantUpdate(Body):
    name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    maxSessions: Annotated[int, Field(ge=1, le=100_000)] | None = None
    dailyMinutesCap: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    brand: Brand | None = None
    allowedOrigins: list[Origin] | None = None
    disabled: bool | None = None
    keywords: Keywords | None = None  # issue 15: default contextual keywords
    profanityFilter: ProfanityFilterOption | None = None  # issue 17: sessions' default


class SessionCreate(Body):
    title: Annotated[Text, Field(max_length=500)] | None = None
    sourceLang: Lang | None = None
    autoDetect: bool = True
    #: issue 15: candidate languages, contextual keywords, noise suppression
    languageHints: LanguageHints | None = None
    language_hint: Annotated[
        Lang | None, Field(description="Legacy single hint; `languageHints` wins.")
    ] = None
    keywords: Keywords | None = None
    reduceNoise: Annotated[
        bool, Field(description="Suppress background noise before VAD and recognition.")
    ] = False
    #: issue 17
    words: Annotated[
        bool,
        Field(
            description="Every final's events carry its word timings (`words`); a "
            "connection may also ask with `?words=1`."
        ),
    ] = False
    #: issue 17: absent: the tenant's default (absent there too: off)
    profanityFilter: ProfanityFilterOption | None = None

    def hints(self) -> list[str]:
        """The candidate languages asked for (``languageHints``, else the legacy one)."""
        if self.languageHints:
            return self.languageHints
        return parse_language_hints(self.language_hint)


class OwnerSecretBody(Body):
    """``ownerSecret`` proves ownership when no ``x-tenant-key`` is sent."""

    ownerSecret: Text | None = None


class SummarizeBody(OwnerSecretBody):
    fromSeq: Annotated[int, Field(ge=0, le=MAX_SEQ)] | None = None
    toSeq: Annotated[int, Field(ge=0, le=MAX_SEQ)] | None = None
    #: issue 16: an extra instruction for a language-model summarizer
    prompt: (
        Annotated[
            Text,
            Field(
                min_length=1,
                max_length=4000,
                description="An extra instruction for the summary (what to focus on, a tone). "
                "A language-model summarizer follows it; the embedded extractive one ignores it.",
            ),
        ]
        | None
    ) = None


class Subtitle(Body):
    text: Annotated[Text, Field(max_length=20_000)]
    ts: Annotated[float, Field(allow_inf_nan=False)] | None = None
    speaker: Annotated[Text, Field(max_length=64)] | None = None


def _summary_only() -> list[Want]:
    return ["summary"]


class BatchRequest(Body):
    """Either ``subtitles``, or ``text`` (one subtitle per line)."""

    model_config = ConfigDict(
        json_schema_extra={
            # Neither (or only blank text) is 400 "send subtitles[] or text".
            "anyOf": [
                {
                    "required": ["subtitles"],
                    "properties": {"subtitles": {"type": "array", "minItems": 1}},
                },
                {
                    "required": ["text"],
                    "properties": {"text": {"type": "string", "pattern": r"\S"}},
                },
            ]
        }
    )

    subtitles: Annotated[list[Subtitle], Field(max_length=100_000)] | None = None
    text: Annotated[Text, Field(max_length=2_000_000)] | None = None
    sourceLang: Lang | None = None
    want: Annotated[list[Want], Field(min_length=1)] = Field(default_factory=_summary_only)


# -- speakers and tracks (issue 14) --------------------------------------------------------

#: What a participant id may hold: MCU participant / endpoint ids (Jitsi endpoint ids,
#: LiveKit identities, e-mail-like ids), bounded by the ``speaker`` column (64).
PARTICIPANT_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,64}$"
ParticipantId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=PARTICIPANT_ID_PATTERN, examples=["p1"])
]


class Participant(Body):
    """The participant an ingest token is bound to: its audio is that speaker's track."""

    id: ParticipantId
    name: Annotated[Text, Field(min_length=1, max_length=100, examples=["Priya"])] | None = None


class IngestTokenRequest(OwnerSecretBody):
    """``participant`` binds the token to one participant's track (absent: the session's
    single mixed producer)."""

    participant: Participant | None = None


class Speaker(TypedDict):
    id: Annotated[str, Field(description="The participant id the ingest token was bound to.")]
    name: Annotated[str, Field(description="Display name (defaults to the id).")]


class SpeakerEvent(TypedDict):
    """A speaker's name was set or changed during the session (sent to every viewer)."""

    type: Literal["speaker"]
    speaker: Speaker


# -- speaker names (issue 14) ------------------------------------------------------------------


class SpeakerNameBody(OwnerSecretBody):
    """``PUT /api/sessions/:id/speakers/:speakerId``: the speaker's display name."""

    name: Annotated[Text, Field(min_length=1, max_length=100, pattern=r"\S", examples=["Priya"])]


class SpeakerList(TypedDict):
    sessionId: SessionId
    speakers: Annotated[list[Speaker], Field(description="Named speakers, by id.")]


# -- jitsi bridge (issue 14) ---------------------------------------------------------------------


class BridgeKeyCreate(Body):
    """``POST /api/bridges``: a label for the credential (which videobridge uses it)."""

    name: Annotated[Text, Field(min_length=1, max_length=200, examples=["jvb-eu-1"])] | None = None


class BridgeKeyInfo(TypedDict):
    """A Jitsi bridge credential, without its secret."""

    id: Annotated[str, Field(description="`brg_…`; `DELETE /api/bridges/:id` revokes it.")]
    name: str | None
    keyPrefix: Annotated[str, Field(description="The first characters of the key.")]
    createdAt: float
    revokedAt: float | None
    lastUsedAt: Annotated[float | None, Field(description="Last accepted connection.")]


class BridgeKeyWithSecret(BridgeKeyInfo):
    key: Annotated[str, Field(description="The bridge credential (`brk_…`). Shown once.")]
    urlTemplate: Annotated[
        str,
        Field(
            description="The URL to configure as jicofo's `transcription.url-template` "
            "(`{{MEETING_ID}}` is Jicofo's placeholder)."
        ),
    ]
    note: Literal["shown once"]


class BridgeKeyList(TypedDict):
    bridges: list[BridgeKeyInfo]


class JitsiSessionInfo(TypedDict):
    """The mcustt session a Jitsi meeting feeds (fresh read tokens each call)."""

    jitsiSessionId: str
    sessionId: SessionId
    status: SessionStatus
    embedToken: str
    embedUrl: Annotated[str, Field(description="`/embed/:id#t=…`, for an iframe.")]
    subscribeToken: str
    subscribeUrl: Annotated[str, Field(description="`/ws/subscribe?token=…`.")]


class JitsiTranscriptItem(TypedDict):
    text: str
    #: only when the recognizer reports one (the proxy omits it likewise)
    confidence: NotRequired[float]


class JitsiParticipant(TypedDict):
    id: Annotated[str, Field(description="The Jitsi endpoint id (the tag's part before `-`).")]
    ssrc: NotRequired[Annotated[str, Field(description="The tag's SSRC part, if any.")]]
    name: NotRequired[str]


class JitsiTranscriptionResult(TypedDict):
    """What ``/transcribe`` sends back to the videobridge, as opus-transcriber-proxy does."""

    type: Literal["transcription-result"]
    event: Literal["transcription-result"]
    is_interim: bool
    transcript: list[JitsiTranscriptItem]
    participant: JitsiParticipant
    language: str
    message_id: Annotated[str, Field(description="Stable for a line's interims and its final.")]
    timestamp: Annotated[int, Field(description="Unix milliseconds.")]


class JitsiPong(TypedDict):
    event: Literal["pong"]
    id: NotRequired[int]


REQUEST_BODIES: tuple[type[Body], ...] = (
    TenantCreate,
    TenantUpdate,
    SessionCreate,
    OwnerSecretBody,
    SummarizeBody,
    BatchRequest,
    IngestTokenRequest,
    SpeakerNameBody,
    BridgeKeyCreate,
)

# -- REST responses ----------------------------------------------------------------------------


class ErrorDetail(TypedDict):
    code: Annotated[str, Field(description="Machine-readable, e.g. `SESSION_NOT_FOUND`.")]
    message: Annotated[str, Field(description="Human-readable, says what to fix.")]


class Error(TypedDict):
    """The one envelope of every REST error."""

    error: ErrorDetail


class Health(TypedDict):
    status: Literal["ok"]


class Readiness(TypedDict):
    status: ReadyStatus
    checks: Annotated[
        dict[str, str], Field(description="`ok` or `failed: reason`, per dependency.")
    ]


class BrandInfo(TypedDict):
    brandName: str
    accentColor: str | None
    logoUrl: str | None


class Tenant(TypedDict):
    tenantId: Annotated[str, Field(description="`tn_` and 16 letters and digits.")]
    name: str
    maxSessions: int
    dailyMinutesCap: int
    brand: BrandInfo
    allowedOrigins: list[str]
    disabled: bool
    keyPrefix: Annotated[str, Field(description="The key's first characters, to tell keys apart.")]
    createdAt: Time
    updatedAt: Time
    #: issue 15: every session's default contextual keywords (the session's come first)
    keywords: list[str]
    #: issue 17: the profanity filter of sessions that ask for none
    profanityFilter: ProfanityFilter


class TenantWithKey(Tenant):
    apiKey: Annotated[str, Field(description="The tenant API key. Shown once.")]
    note: Literal["shown once"]


class TenantList(TypedDict):
    tenants: list[Tenant]


class ReadTokens(TypedDict):
    embedToken: str
    embedUrl: Annotated[str, Field(description="`/embed/:id#t=…`, for an iframe.")]
    subscribeToken: str
    subscribeUrl: Annotated[str, Field(description="`ws(s)://…/ws/subscribe?token=…`.")]


class IngestToken(TypedDict):
    ingestToken: Annotated[str, Field(description="Single-use ingest token (JWT, ~12 h).")]
    ingestUrl: Annotated[str, Field(description="`ws(s)://…/ws/stt?token=…`.")]


class SessionCreated(ReadTokens, IngestToken):
    sessionId: SessionId
    ownerSecret: Annotated[
        str, Field(description="Ends the session and mints ingest tokens. Shown once.")
    ]
    brand: BrandInfo


class CaptionLatency(TypedDict):
    """issue 17: how fast this session's captions come, from the last (up to 200)
    utterances of its current producer connection (nearest-rank percentiles; null: no
    observation yet). Written every few seconds by the node running the pipeline."""

    finalP50Ms: Annotated[
        int | None, Field(description="End of speech (VAD) to the final made, p50.")
    ]
    finalP95Ms: Annotated[int | None, Field(description="End of speech to the final made, p95.")]
    firstInterimP50Ms: Annotated[
        int | None, Field(description="Speech start (VAD) to the first interim, p50.")
    ]
    firstInterimP95Ms: Annotated[
        int | None, Field(description="Speech start to the first interim, p95.")
    ]
    interimIntervalP50Ms: Annotated[
        int | None, Field(description="Between interims of one utterance, p50.")
    ]
    interimIntervalP95Ms: Annotated[
        int | None, Field(description="Between interims of one utterance, p95.")
    ]
    finals: Annotated[int, Field(description="Finals the figures are computed from.")]
    updatedAt: Time


class SessionState(TypedDict):
    sessionId: SessionId
    status: SessionStatus
    title: str | None
    sourceLang: str
    autoDetect: bool
    detectedLang: str | None
    detectedLangName: str | None
    lineCount: int
    lastSeq: Annotated[int, Field(description="Seq of the last final line (0: none yet).")]
    ingestConnected: bool
    subscribers: int
    summaryStatus: SummaryStatus
    audioSeconds: float
    createdAt: Time
    endedAt: Time | None
    endReason: str | None
    brand: BrandInfo | None
    #: issue 15: the session's options
    languageHints: Annotated[list[str], Field(description="Candidate languages (≤ 3).")]
    keywords: Annotated[
        list[str], Field(description="The session's own keywords (the tenant's are added).")
    ]
    reduceNoise: bool
    #: issue 17: finals carry word timings for every viewer
    words: bool
    profanityFilter: Annotated[
        ProfanityFilter,
        Field(description="The session's profanity filter (its own, else the tenant's default)."),
    ]
    #: issue 17: caption health (null until the session's first figures are written)
    latency: CaptionLatency | None


class SessionListItem(TypedDict):
    sessionId: SessionId
    title: str | None
    status: SessionStatus
    createdAt: Time
    endedAt: Time | None
    lastSeq: int


class SessionList(TypedDict):
    sessions: list[SessionListItem]


class WordTiming(TypedDict):
    """One recognized word of a final (issue 17), in the session's audio time."""

    text: Annotated[str, Field(description="The word as shown in the line's text.")]
    startMs: Annotated[int, Field(description="Start in the session's audio, ms.")]
    endMs: Annotated[int, Field(description="End in the session's audio, ms.")]
    confidence: Annotated[
        float | None, Field(description="0-1; null when the engine gives none (sphinx).")
    ]


class TranscriptLine(TypedDict):
    seq: int
    lang: str
    text: str
    ts: Annotated[int, Field(description="Wall clock of the final, unix milliseconds.")]
    startMs: Annotated[int, Field(description="Start in the session's audio, ms.")]
    endMs: Annotated[int, Field(description="End in the session's audio, ms.")]
    #: who said it, by the speaker's current name (participant tracks); absent otherwise
    speaker: NotRequired[Speaker]
    #: issue 16: present (true) when the line was corrected; ``text`` is the correction
    revised: NotRequired[
        Annotated[bool, Field(description="True: `text` is a correction (see the line).")]
    ]
    #: issue 17: always present in the json export
    confidence: Annotated[
        float | None, Field(description="The engine's confidence, 0-1 (null: none given).")
    ]
    words: Annotated[
        list[WordTiming] | None,
        Field(
            description="The words with their timings (null: none recorded, e.g. older "
            "lines, or a correction that changed the number of words)."
        ),
    ]


class Transcript(TypedDict):
    sessionId: SessionId
    lineCount: int
    lines: list[TranscriptLine]


class ActionItem(TypedDict):
    owner: str | None
    task: str


class SummaryContent(TypedDict):
    tldr: str
    decisions: list[str]
    actionItems: list[ActionItem]
    qa: list[str]


class Summary(TypedDict):
    """A ready summary."""

    status: Literal["ready"]
    model: str | None
    lang: str | None
    content: SummaryContent
    fromSeq: int | None
    toSeq: int | None
    updatedAt: Time


class SummaryPending(TypedDict):
    """A summary not (yet) made: ``error`` says why one failed."""

    status: Literal["pending", "failed"]
    error: NotRequired[str]


class SummarizeAccepted(TypedDict):
    status: Literal["pending"]
    jobId: str
    poll: str


class BatchResult(TypedDict):
    language: str
    transcript: NotRequired[
        Annotated[str, Field(description="With `want` including `transcript`.")]
    ]
    summary: NotRequired[SummaryContent]
    model: NotRequired[str]


class SessionSummaryResult(TypedDict):
    """A ``session_summary`` job's result (the session's summary, also stored as such)."""

    model: str
    lang: str
    content: SummaryContent
    fromSeq: int | None
    toSeq: int | None


class JobAccepted(TypedDict):
    jobId: str
    status: JobStatus
    poll: str


class Job(TypedDict):
    jobId: str
    kind: JobKind
    status: JobStatus
    result: Annotated[
        # MeetingDocument: a ``document`` job's (issue 16), defined with its feature below
        # FileTranscript: a ``transcription`` job's (issue 15)
        SessionSummaryResult | BatchResult | MeetingDocument | FileTranscript | None,
        Field(description="Once `ready`: what the job's `kind` produces."),
    ]
    error: str | None
    attempts: int
    createdAt: Time
    updatedAt: Time


#: The response documents, by the name they have in ``/openapi.json``.
RESPONSES: tuple[type[Any], ...] = (
    Error,
    Health,
    Readiness,
    BrandInfo,
    Tenant,
    TenantWithKey,
    TenantList,
    ReadTokens,
    IngestToken,
    SessionCreated,
    SessionState,
    SessionList,
    Transcript,
    SummaryContent,
    Summary,
    SummaryPending,
    SummarizeAccepted,
    BatchResult,
    SessionSummaryResult,
    JobAccepted,
    Job,
    Speaker,
    SpeakerList,
    BridgeKeyInfo,
    BridgeKeyWithSecret,
    BridgeKeyList,
    JitsiSessionInfo,
)

# -- WebSocket / SSE frames (§5) ------------------------------------------------------------------


class ReadyEvent(TypedDict):
    """The ingest socket's first frame. The zero-ceremony path (``x-tenant-key``) adds the
    session it created and its URLs."""

    type: Literal["ready"]
    sessionId: NotRequired[SessionId]
    embedUrl: NotRequired[str]
    embedToken: NotRequired[str]
    subscribeUrl: NotRequired[str]
    subscribeToken: NotRequired[str]
    ownerSecret: NotRequired[str]


class TranscriptEvent(TypedDict):
    type: Literal["transcript"]
    text: str
    isFinal: bool
    seq: int
    lang: str
    ts: int
    #: who spoke (participant tracks, issue 14); absent for the mixed producer
    speaker: NotRequired[Speaker]
    #: issue 16: a correction of the final ``seq`` a viewer already has (replace its
    #: text in place; it is not a new line and does not advance the seq)
    revised: NotRequired[bool]
    #: issue 17: finals only: where the words are in the session's audio, and the
    #: engine's confidence (null: it gives none)
    startMs: NotRequired[int]
    endMs: NotRequired[int]
    confidence: NotRequired[float | None]
    #: issue 17: finals only, for sessions created with ``words: true`` or connections
    #: with ``?words=1`` (absent when the engine gave no word timings)
    words: NotRequired[list[WordTiming]]


class LanguageEvent(TypedDict):
    type: Literal["language"]
    code: str


class SessionEndEvent(TypedDict):
    type: Literal["session-end"]
    reason: NotRequired[str]


class ErrorEvent(TypedDict):
    type: Literal["error"]
    code: str
    message: str
    fatal: bool


class PongEvent(TypedDict):
    """The answer to ``{"type":"ping"}``; ``ts`` echoes the ping's (null if it had none)."""

    type: Literal["pong"]
    ts: Any


#: What the session's channel carries to viewers and producers.
ServerEvent = TranscriptEvent | LanguageEvent | SessionEndEvent | ErrorEvent | SpeakerEvent
#: Everything the ingest socket sends its producer.
ProducerEvent = ReadyEvent | PongEvent | ServerEvent


class StopControl(TypedDict):
    """Node-to-node control on the session channel (never shown to viewers): the
    producer's node finalizes and ends the session."""

    type: Literal["_stop"]
    reason: str


class ResyncControl(TypedDict):
    """Node-to-node control on the session channel (never shown to viewers): a node
    dropped some of the session's messages it could not publish (a long broker outage);
    every node's viewers of the session replay from the store."""

    type: Literal["_resync"]


#: Anything published on a session's channel.
ChannelMessage = ServerEvent | StopControl | ResyncControl

#: The frames of the WebSockets and the SSE feed, by the name they have in ``/openapi.json``.
EVENTS: tuple[type[Any], ...] = (
    ReadyEvent,
    TranscriptEvent,
    LanguageEvent,
    SessionEndEvent,
    ErrorEvent,
    PongEvent,
    SpeakerEvent,
)


# -- webhooks and triggers (issue 16) ------------------------------------------------------

#: What a webhook endpoint may subscribe to, and the ``type`` of every event sent.
WebhookEventType = Literal[
    "session.ended",
    "summary.ready",
    "summary.failed",
    "job.finished",
    "document.ready",
    "line.revised",
]
#: ``pending``: waiting for its (next) attempt; ``delivering``: an attempt is in flight
#: (under a lease); ``delivered``: a 2xx came back; ``failed``: retries exhausted (or the
#: endpoint answered 410 Gone).
WebhookDeliveryStatus = Literal["pending", "delivering", "delivered", "failed"]


# -- meeting AI: ask and documents (issue 16) ------------------------------------------------

DocumentStatus = Literal["pending", "ready", "failed"]


class AskBody(OwnerSecretBody):
    question: Annotated[Text, Field(min_length=1, max_length=2000)]


class DocumentBody(OwnerSecretBody):
    prompt: Annotated[
        Text,
        Field(
            min_length=1,
            max_length=4000,
            description='What to write, e.g. "Summarize key decisions and action items".',
        ),
    ]
    callbackUrl: (
        Annotated[
            Text,
            Field(
                max_length=2000,
                pattern=URL_PATTERN,
                description="Where to POST the result when it is done (signed like webhooks, "
                "retried); without it, poll the document.",
            ),
        ]
        | None
    ) = None


class Citation(TypedDict):
    seq: int | None
    speaker: NotRequired[str]
    text: str


class Answer(TypedDict):
    answer: str
    citations: list[Citation]
    extractive: Annotated[
        bool,
        Field(description="True: the answer quotes transcript lines (no language model)."),
    ]
    model: str


class DocumentAccepted(TypedDict):
    docId: str
    status: Literal["pending"]
    poll: str
    callbackSecret: NotRequired[
        Annotated[
            str,
            Field(
                description="With `callbackUrl`: the Standard Webhooks secret (`whsec_…`) "
                "the callback is signed with; shown once."
            ),
        ]
    ]


class MeetingDocument(TypedDict):
    docId: str
    sessionId: SessionId
    status: DocumentStatus
    prompt: str
    markdown: NotRequired[str]
    model: NotRequired[str]
    error: NotRequired[str]
    createdAt: Time
    updatedAt: Time


class DocumentCallback(TypedDict):
    """What is POSTed to a document's ``callbackUrl`` (the neighbour product's shape)."""

    status: Literal["success", "failure"]
    sessionId: SessionId
    docId: str
    documentText: NotRequired[str]
    model: NotRequired[str]
    error: NotRequired[str]
    createdAt: Annotated[str, Field(description="ISO 8601, UTC.")]


REQUEST_BODIES += (AskBody, DocumentBody)
RESPONSES += (Citation, Answer, DocumentAccepted, MeetingDocument, DocumentCallback)

IsoTime = Annotated[str, Field(description="ISO 8601, UTC.")]


class WebhookSessionEndedData(TypedDict):
    """``session.ended``: a session ended (stop, DELETE, daily cap, or abandonment)."""

    sessionId: SessionId
    title: str | None
    language: str
    startAt: IsoTime
    endAt: IsoTime
    endReason: str | None
    audioMs: int
    lineCount: int


class WebhookSummaryReadyData(TypedDict):
    """``summary.ready``: a session's summary was made (or remade)."""

    sessionId: SessionId
    sessionTitle: str | None
    model: str
    lang: str
    markdownBody: Annotated[str, Field(description="The summary rendered as Markdown.")]
    summary: SummaryContent
    fromSeq: int | None
    toSeq: int | None
    createdAt: IsoTime


class WebhookSummaryFailedData(TypedDict):
    """``summary.failed``: making a session's summary failed (a ready one stays)."""

    sessionId: SessionId
    sessionTitle: str | None
    error: str
    createdAt: IsoTime


class WebhookJobFinishedData(TypedDict):
    """``job.finished``: a job other than a session summary finished (poll it for the
    result)."""

    jobId: str
    kind: str
    status: JobStatus
    sessionId: SessionId | None
    error: str | None
    createdAt: IsoTime


class WebhookPayload(TypedDict):
    """The body POSTed to a registered endpoint (the Standard Webhooks shape); ``data``
    is one of the ``Webhook…Data`` shapes, by ``type``."""

    type: WebhookEventType
    timestamp: IsoTime
    data: dict[str, Any]


# -- corrections (issue 16) ------------------------------------------------------------------

#: Who made a correction: the tenant's backend (tenant key) or the session's owner
#: (owner secret). Never the credential itself.
RevisionAuthor = Literal["tenant", "owner"]
#: The longest correction of one line.
MAX_LINE_TEXT = 2000


class LineRevisionBody(OwnerSecretBody):
    """``PATCH /api/sessions/:id/lines/:seq``: the corrected text of one final line."""

    text: Annotated[
        Text,
        Field(
            min_length=1,
            max_length=MAX_LINE_TEXT,
            pattern=r"\S",
            description="The corrected text (not blank; surrounding whitespace dropped).",
        ),
    ]


class LineOriginal(TypedDict):
    """The final as the recognizer made it (kept whatever the corrections)."""

    text: str
    lang: str
    ts: Annotated[int, Field(description="Wall clock of the final, unix milliseconds.")]


class LineRevision(TypedDict):
    revision: Annotated[int, Field(description="1 for the first correction, then 2…")]
    text: str
    author: RevisionAuthor
    createdAt: Time


class LineDetail(TypedDict):
    """One transcript line: its current text, the original and every correction."""

    seq: int
    text: Annotated[str, Field(description="The current text (the latest correction).")]
    lang: str
    ts: Annotated[int, Field(description="Wall clock of the final, unix milliseconds.")]
    startMs: int
    endMs: int
    speaker: NotRequired[str]
    revision: Annotated[int, Field(description="The current revision (0: never corrected).")]
    original: LineOriginal
    revisions: Annotated[list[LineRevision], Field(description="Oldest first.")]


class WebhookLineRevisedData(TypedDict):
    """``line.revised``: a final line of a session was corrected."""

    sessionId: SessionId
    seq: int
    text: Annotated[str, Field(description="The corrected text.")]
    previousText: Annotated[str, Field(description="The text before this correction.")]
    revision: int
    author: RevisionAuthor
    revisedAt: IsoTime


REQUEST_BODIES += (LineRevisionBody,)
RESPONSES += (LineOriginal, LineRevision, LineDetail)


# -- text to speech (issue 16) -------------------------------------------------------------

#: The one audio format of every engine: an Ogg container holding Opus.
TtsFormat = Literal["ogg_opus"]
#: The longest text any engine takes (OpenAI's speech endpoint takes 4096 characters);
#: ``MCUSTT_TTS_MAX_CHARS`` may lower it.
TTS_MAX_TEXT = 4096
#: A voice name: espeak-ng's (``en``, ``en-us``, ``de``…) or OpenAI's (``alloy``…).
VOICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"


class TtsBody(Body):
    """``POST /api/tts``: text to speak."""

    text: Annotated[
        Text,
        Field(
            min_length=1,
            max_length=TTS_MAX_TEXT,
            pattern=r"\S",
            description="What to say (not blank; at most `MCUSTT_TTS_MAX_CHARS`, 4000 by default).",
        ),
    ]
    voice: (
        Annotated[
            str,
            Field(
                pattern=VOICE_PATTERN,
                max_length=64,
                description="One of `GET /api/tts/voices` (default: the server's).",
            ),
        ]
        | None
    ) = None
    format: Annotated[
        Literal["ogg_opus", "opus"] | None,
        Field(description="Only OGG/Opus is made; `opus` is the same."),
    ] = None


class V1TtsBody(Body):
    """``POST /v1/tts`` (seed 000): JSON in place of its protobuf ``SessionTTSRequest``."""

    session_id: Annotated[Text, Field(min_length=1, max_length=128)]
    message_id: Annotated[Text, Field(min_length=1, max_length=128)]
    text: Annotated[Text, Field(min_length=1, max_length=TTS_MAX_TEXT)]


class TtsAudio(TypedDict):
    """A stored OGG/Opus file and its signed URL."""

    id: Annotated[str, Field(description="`tts_` and 16 letters and digits.")]
    audioUrl: Annotated[
        str,
        Field(
            description="`/media/tts/:id.ogg?exp=…&sig=…`: fetch without credentials until "
            "`expiresAt` (a capability: share it like the file itself)."
        ),
    ]
    expiresAt: Time
    voice: str
    format: TtsFormat
    bytes: Annotated[int, Field(description="Size of the file.")]
    createdAt: Time


class TtsVoices(TypedDict):
    engine: Annotated[str, Field(description="`espeak`, `openai`, or a plug-in's name.")]
    defaultVoice: str
    voices: list[str]


class V1TtsResponse(TypedDict):
    """``POST /v1/tts`` (seed 000): ``audio_url`` on success, ``error`` on failure."""

    audio_url: Annotated[str, Field(description="Signed OGG/Opus URL; empty on failure.")]
    error: Annotated[str, Field(description="Empty on success.")]


REQUEST_BODIES += (TtsBody, V1TtsBody)
RESPONSES += (TtsAudio, TtsVoices, V1TtsResponse)

#: The event names, in the order documented.
WEBHOOK_EVENTS: tuple[str, ...] = get_args(WebhookEventType)


class WebhookCreate(Body):
    url: Annotated[Text, Field(min_length=1, max_length=2000, pattern=URL_PATTERN)]
    events: Annotated[list[WebhookEventType], Field(min_length=1, max_length=len(WEBHOOK_EVENTS))]


class WebhookEndpoint(TypedDict):
    id: str
    url: str
    events: list[str]
    disabled: Annotated[bool, Field(description="True after the receiver answered 410 Gone.")]
    createdAt: Time
    updatedAt: Time


class WebhookCreated(WebhookEndpoint):
    secret: Annotated[
        str,
        Field(description="The Standard Webhooks signing secret (`whsec_…`); shown once."),
    ]


class WebhookList(TypedDict):
    webhooks: list[WebhookEndpoint]


class WebhookDeliveryInfo(TypedDict):
    id: str
    eventId: Annotated[str, Field(description="The `webhook-id` header: the same on retries.")]
    type: str
    sessionId: SessionId | None
    status: WebhookDeliveryStatus
    attempts: int
    lastStatus: Annotated[int | None, Field(description="The last answer's HTTP status.")]
    lastError: str | None
    nextAttemptAt: Time | None
    createdAt: Time
    updatedAt: Time
    deliveredAt: Time | None


class WebhookDeliveryList(TypedDict):
    deliveries: list[WebhookDeliveryInfo]


class TriggerSessionEnded(TypedDict):
    """An item of ``GET /api/triggers/session-ended`` (the neighbour's meeting-ended)."""

    id: Annotated[str, Field(description="The event id (deduplication key).")]
    sessionId: SessionId
    title: str | None
    startAt: IsoTime
    endAt: IsoTime
    language: str
    endReason: str | None
    audioMs: int
    lineCount: int


class TriggerSummaryReady(TypedDict):
    """An item of ``GET /api/triggers/summary-ready``."""

    id: Annotated[str, Field(description="The event id (deduplication key).")]
    sessionId: SessionId
    sessionTitle: str | None
    model: str
    markdownBody: str
    createdAt: IsoTime


REQUEST_BODIES += (WebhookCreate,)
RESPONSES += (
    WebhookEndpoint,
    WebhookCreated,
    WebhookList,
    WebhookDeliveryInfo,
    WebhookDeliveryList,
    TriggerSessionEnded,
    TriggerSummaryReady,
    WebhookPayload,
    WebhookSessionEndedData,
    WebhookSummaryReadyData,
    WebhookSummaryFailedData,
    WebhookJobFinishedData,
)


# -- file transcription (issue 15) ----------------------------------------------------------

DiarizationState = Literal["done", "disabled", "unavailable", "failed"]


class TranscribeRequest(Body):
    """``POST /api/transcribe`` as JSON (an ``audio_url``), or the form fields of a
    multipart upload (the file in the part ``file``)."""

    audio_url: (
        Annotated[
            Text,
            Field(
                min_length=1,
                max_length=2000,
                description="An http(s) URL of the audio (JSON requests); not with a `file`.",
            ),
        ]
        | None
    ) = None
    language_hints: LanguageHints | None = None
    language_hint: Annotated[
        Lang | None, Field(description="Legacy single hint; `language_hints` wins.")
    ] = None
    enable_diarization: Annotated[
        bool, Field(description="Label speakers (needs the `mcustt[diarization]` extra).")
    ] = True
    title: Annotated[Text, Field(max_length=500)] | None = None
    reduce_noise: Annotated[
        bool, Field(description="Suppress background noise before VAD and recognition.")
    ] = False
    keywords: Keywords | None = None

    def hints(self) -> list[str]:
        """The candidate languages asked for (``language_hints``, else the legacy one)."""
        if self.language_hints:
            return self.language_hints
        return parse_language_hints(self.language_hint)


class FileUtterance(TypedDict):
    """One recognized utterance of a file, with its speaker."""

    speaker: Annotated[str, Field(description='The speaker: "0", "1", … in order of appearance.')]
    text: str
    start_ms: int
    end_ms: int
    confidence: Annotated[
        float | None, Field(description="0-1; null when the engine reports none (sphinx).")
    ]
    language: str


class DiarizationInfo(TypedDict):
    """Whether speakers were told apart, and if not, why."""

    status: DiarizationState
    reason: NotRequired[str]
    engine: NotRequired[str]
    speakers: NotRequired[int]


class FileTranscript(TypedDict):
    """A transcribed file (inline answer, or a ``transcription`` job's result)."""

    sessionId: SessionId
    text: str
    detected_language: str | None
    confidence: Annotated[
        float | None, Field(description="Mean utterance confidence, 0-1 (null: none reported).")
    ]
    utterances: list[FileUtterance]
    diarization: DiarizationInfo
    duration_ms: int


REQUEST_BODIES += (TranscribeRequest,)
RESPONSES += (FileUtterance, DiarizationInfo, FileTranscript)


# -- the compatible API, seed 000's /v1/stt (issue 15) -------------------------------------

#: The longest ``session_id`` a compatible client may name its session by.
V1_SESSION_ID_CHARS = 128


class V1SttBody(Body):
    """``POST /v1/stt`` (seed 000): a public audio URL, transcribed with speakers."""

    audio_url: Annotated[
        Text, Field(min_length=1, max_length=2000, description="Public http(s) audio URL.")
    ]
    session_id: (
        Annotated[
            Text,
            Field(
                min_length=1,
                max_length=V1_SESSION_ID_CHARS,
                description="Your name for the file's session (kept as its title).",
            ),
        ]
        | None
    ) = None
    enable_diarization: bool = True
    language_hints: LanguageHints | None = None
    language_hint: Annotated[
        Lang | None, Field(description="Legacy single hint; `language_hints` wins.")
    ] = None

    def hints(self) -> list[str]:
        if self.language_hints:
            return self.language_hints
        return parse_language_hints(self.language_hint)


class V1Utterance(TypedDict):
    speaker: Annotated[str, Field(description='"0", "1", … in order of appearance.')]
    text: str
    start_ms: int
    end_ms: int
    confidence: Annotated[float | None, Field(description="0-1; null when none reported.")]
    language: str


class V1SttResponse(TypedDict):
    """``POST /v1/stt`` (seed 000): its fields, plus mcustt's ``session_id`` (the
    file's session: transcript, summary, embed) and ``diarization`` (whether speakers
    were told apart, and why not)."""

    text: str
    detected_language: str | None
    confidence: Annotated[float | None, Field(description="0-1; null when none reported.")]
    utterances: list[V1Utterance]
    session_id: SessionId
    diarization: DiarizationInfo


class V1Error(TypedDict):
    """Seed 000's error body: ``error`` is the seed's text (``Invalid API key``, …)."""

    success: Literal[False]
    error: str
    code: Annotated[str, Field(description="mcustt's error code for the same refusal.")]


class V1StreamStart(Body):
    """The compatible stream's first text frame."""

    encoding: Literal["pcm16", "opus"] = "pcm16"
    session_id: Annotated[Text, Field(min_length=1, max_length=V1_SESSION_ID_CHARS)] | None = None
    language_hints: LanguageHints | None = None


class V1Chunk(TypedDict):
    id: Annotated[str, Field(description="Same across an utterance's interims and final.")]
    session_id: str
    text: str
    is_final: bool


class V1ChunkEvent(TypedDict):
    chunk: V1Chunk


class V1Connected(TypedDict):
    """The answer to the start frame; ``mcustt`` holds the session's id and, for a new
    session, its embed / subscribe URLs and owner secret (the zero-ceremony ``ready``)."""

    connected: Literal[True]
    mcustt: dict[str, str]


REQUEST_BODIES += (V1SttBody, V1StreamStart)
RESPONSES += (V1Utterance, V1SttResponse, V1Error)
EVENTS += (V1ChunkEvent, V1Connected)
