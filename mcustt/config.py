"""Settings, read once from the environment into one immutable object.

Every setting is listed (with its default) in the README's configuration table, in the
order of :class:`Settings`; ``tests/test_config.py`` fails when the two drift apart.
Credentials never show in ``repr(settings)`` (logs, tracebacks): see :data:`SECRETS`.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mcustt.errors import MCUSTTError
from mcustt.wire import ErrorCode


class ConfigError(MCUSTTError):
    code = ErrorCode.CONFIG


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


@dataclass(frozen=True, repr=False)
class Settings:
    # Storage and scale-out
    database_url: str = "sqlite:///./var/mcustt.db"
    redis_url: str | None = None
    redis_prefix: str = "mcustt"
    migrate_on_start: bool = False
    # Credentials
    admin_token: str | None = None
    jwt_secret: str | None = None
    ingest_token_ttl_s: int = 12 * 3600
    read_token_ttl_s: int = 8 * 3600
    # Addresses
    #: empty = http://{host}:{port}, the address `mcustt serve` listens on
    public_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    trusted_proxies: list[str] = field(default_factory=list)
    log_level: str = "info"
    # Engines
    recognizer: str = "sphinx"
    recognizer_workers: int = 0  # 0 = one per core
    #: decoders each sphinx worker builds before it is ready and keeps (~90 MB each): the
    #: utterances it overlaps at peak, so that its memory is what it is from the start
    sphinx_decoders: int = 1
    summarizer: str = "extractive"
    google_project: str | None = None
    google_location: str = "us-central1"
    google_model: str = "chirp_2"
    google_endpoint: str | None = None
    google_languages: list[str] = field(default_factory=lambda: ["en-US"])
    google_stream_limit_s: float = 290.0
    #: issue 15: the boost of contextual keywords in Google's inline phrase set (0..20)
    google_keyword_boost: float = 10.0
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_s: float = 60.0
    openai_context_chars: int = 24_000
    # Text to speech (issue 16)
    tts: str = "espeak"
    #: unset = the engine's own default voice (espeak `en`, openai `alloy`)
    tts_voice: str | None = None
    openai_tts_model: str = "gpt-4o-mini-tts"
    tts_url_ttl_s: int = 7 * 86400
    tts_max_chars: int = 4000
    tts_concurrency: int = 2
    rate_tts: str = "30/minute"
    # Diarization (issue 15)
    #: auto = resemblyzer when the mcustt[diarization] extra is installed, else none
    diarizer: str = "auto"
    #: files diarized at once per node (each holds a CPU core while it runs)
    diarization_concurrency: int = 1
    #: cosine similarity of two mean voices above which they are one speaker (0..1)
    diarization_threshold: float = 0.78
    #: the most speakers one file is split into
    diarization_max_speakers: int = 8
    # Ingest behaviour
    ingest_idle_timeout_s: float = 120.0
    max_utterance_s: float = 15.0
    vad_aggressiveness: int = 2
    # Endpointing (issue 17, mcustt.vad.Endpointing): the pause that ends an utterance
    #: ... shorter than ENDPOINT_FAST_AFTER_MS of speech
    endpoint_silence_ms: int = 600
    #: ... once it has that much speech (the viewer's wait for most finals)
    endpoint_fast_silence_ms: int = 120
    endpoint_fast_after_ms: int = 2000
    #: a frame this far below the utterance's speech level is silence (0 = webrtcvad only)
    endpoint_energy_drop_db: float = 35.0
    # Limits (§16)
    rate_create_session: str = "60/minute"
    rate_summarize: str = "30/minute"
    rate_ws_upgrade: str = "120/minute"
    max_concurrent_ingest: int = 20
    default_max_sessions: int = 50
    default_daily_minutes_cap: int = 6000
    # Drains and admission control (issue 13)
    #: on SIGTERM: how long the node has to finalize, hand producers and viewers over
    #: to other nodes and exit
    drain_grace_s: float = 10.0
    #: event-loop lag (p90 over the last 2 s) above which new producers are refused
    #: (503 NODE_OVERLOADED); 0 = not checked
    max_loop_lag_ms: float = 100.0
    #: share of the last 1 s the event-loop thread was on the CPU above which new
    #: producers are refused; 0 = not checked
    max_loop_busy: float = 0.65
    #: recognizer backlog (0 idle .. 1 saturated, engines that report one) above which
    #: new producers are refused; 0 = not checked
    max_recognizer_load: float = 0.9
    #: producers (tracks) this node serves at most; 0 = no limit
    max_producers_per_node: int = 0
    # Fan-out
    viewer_queue_size: int = 256
    sse_ping_s: float = 15.0
    # WebRTC
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    webrtc_host_addresses: list[str] = field(default_factory=list)
    webrtc_connect_timeout_s: float = 20.0
    # Jitsi bridge (issue 14)
    #: after a meeting's last bridge socket closed, end its session this much later
    #: (a bridge reconnecting in time continues it); 0 = leave it live (abandonment)
    jitsi_end_grace_s: float = 60.0
    # Node failover (issue 13)
    #: how often each node renews its heartbeat row
    node_heartbeat_s: float = 2.0
    #: a producer claim whose node has not beaten for this long may be taken over
    node_dead_after_s: float = 6.0
    # Database outages (issue 13)
    #: the longest a final may wait for an unreachable database before its producer is
    #: disconnected (STORE_UNAVAILABLE, close 1013)
    store_outage_max_s: float = 30.0
    #: the most finals one track keeps while the database is unreachable
    store_outage_max_finals: int = 200
    # Jobs and retention
    job_lease_s: float = 120.0
    job_poll_s: float = 1.0
    retention_days: int = 30
    retention_interval_s: float = 3600.0
    # Webhooks and outbound fetches (issue 16)
    #: let webhook/callback/audio URLs reach private, loopback, link-local… addresses
    allow_private_urls: bool = False
    webhook_timeout_s: float = 10.0
    #: the first retry's delay; later ones grow from it (5 s → 5 s, 30 s, 2 min … 8 h)
    webhook_retry_base_s: float = 5.0
    webhook_workers: int = 2
    webhook_poll_s: float = 2.0
    webhook_max_endpoints: int = 20
    # File transcription (issue 15)
    #: largest upload or fetched audio_url file
    transcribe_max_bytes: int = 200 * 1024 * 1024
    #: longest audio a file may decode to
    transcribe_max_audio_s: float = 4 * 3600.0
    #: files up to this much audio are answered inline; longer ones become jobs
    transcribe_inline_s: float = 60.0
    #: the whole fetch of an audio_url (connect, redirects, body) must finish within this
    transcribe_fetch_timeout_s: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``MCUSTT_*`` variables (and ``OPENAI_*``)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = ENV_NAMES.get(f.name, "MCUSTT_" + f.name.upper())
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            default = getattr(cls(), f.name)
            try:
                if f.name == "ice_servers":
                    parsed = json.loads(raw)
                    if not isinstance(parsed, list):
                        raise ValueError("expected a JSON list")
                    values[f.name] = parsed
                elif isinstance(default, bool):
                    values[f.name] = _bool(raw)
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                elif isinstance(default, list):
                    values[f.name] = _list(raw)
                else:
                    values[f.name] = raw
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from exc
        settings = cls(**values)
        settings.validate()
        return settings

    def __post_init__(self) -> None:
        if not self.public_url:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
            object.__setattr__(self, "public_url", f"http://{host}:{self.port}")

    def validate(self) -> None:
        if self.recognizer_workers < 0:
            raise ConfigError("MCUSTT_RECOGNIZER_WORKERS must be >= 0")
        if not 1 <= self.sphinx_decoders <= 64:
            raise ConfigError("MCUSTT_SPHINX_DECODERS must be 1..64")
        if not 0 <= self.vad_aggressiveness <= 3:
            raise ConfigError("MCUSTT_VAD_AGGRESSIVENESS must be 0..3")
        if min(self.endpoint_silence_ms, self.endpoint_fast_silence_ms) < 20:
            raise ConfigError("MCUSTT_ENDPOINT_SILENCE_MS and _FAST_SILENCE_MS must be >= 20")
        if self.endpoint_fast_after_ms < 0 or self.endpoint_energy_drop_db < 0:
            raise ConfigError("MCUSTT_ENDPOINT_FAST_AFTER_MS and _ENERGY_DROP_DB must be >= 0")
        if self.drain_grace_s <= 0:
            raise ConfigError("MCUSTT_DRAIN_GRACE_S must be > 0")
        if self.max_loop_lag_ms < 0 or self.max_recognizer_load < 0:
            raise ConfigError("MCUSTT_MAX_LOOP_LAG_MS and _MAX_RECOGNIZER_LOAD must be >= 0")
        if not 0 <= self.max_loop_busy <= 1:
            raise ConfigError("MCUSTT_MAX_LOOP_BUSY must be 0..1")
        if self.max_producers_per_node < 0:
            raise ConfigError("MCUSTT_MAX_PRODUCERS_PER_NODE must be >= 0")
        if self.store_outage_max_s <= 0 or self.store_outage_max_finals < 1:
            raise ConfigError("MCUSTT_STORE_OUTAGE_MAX_S must be > 0, _MAX_FINALS >= 1")
        if self.jitsi_end_grace_s < 0:
            raise ConfigError("MCUSTT_JITSI_END_GRACE_S must be >= 0")
        if not 0 < self.node_heartbeat_s < self.node_dead_after_s:
            # a live node must beat at least once before it can look dead
            raise ConfigError("MCUSTT_NODE_HEARTBEAT_S must be > 0 and < MCUSTT_NODE_DEAD_AFTER_S")
        if self.tts_url_ttl_s < 1 or self.tts_max_chars < 1 or self.tts_concurrency < 1:
            raise ConfigError("MCUSTT_TTS_URL_TTL_S, _MAX_CHARS and _CONCURRENCY must be >= 1")
        if self.diarization_concurrency < 1 or self.diarization_max_speakers < 1:
            raise ConfigError("MCUSTT_DIARIZATION_CONCURRENCY and _MAX_SPEAKERS must be >= 1")
        if not 0.0 < self.diarization_threshold < 1.0:
            raise ConfigError("MCUSTT_DIARIZATION_THRESHOLD must be between 0 and 1")
        if not 0.0 <= self.google_keyword_boost <= 20.0:
            raise ConfigError("MCUSTT_GOOGLE_KEYWORD_BOOST must be between 0 and 20")
        if self.webhook_timeout_s <= 0 or self.webhook_retry_base_s <= 0:
            raise ConfigError("MCUSTT_WEBHOOK_TIMEOUT_S and _RETRY_BASE_S must be > 0")
        if self.webhook_workers < 0 or self.webhook_max_endpoints < 1:
            raise ConfigError("MCUSTT_WEBHOOK_WORKERS must be >= 0, _MAX_ENDPOINTS >= 1")
        if self.transcribe_max_bytes < 1 or self.transcribe_max_audio_s <= 0:
            raise ConfigError("MCUSTT_TRANSCRIBE_MAX_BYTES and _MAX_AUDIO_S must be > 0")
        if self.transcribe_inline_s < 0 or self.transcribe_fetch_timeout_s <= 0:
            raise ConfigError("MCUSTT_TRANSCRIBE_INLINE_S must be >= 0, _FETCH_TIMEOUT_S > 0")
        if not self.public_url.startswith(("http://", "https://")):
            raise ConfigError("MCUSTT_PUBLIC_URL must start with http:// or https://")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                # uvicorn's proxy middleware would take it as a literal host name and
                # silently never match: refuse it instead.
                raise ConfigError(
                    f"MCUSTT_TRUSTED_PROXIES: {proxy!r} is not an address or CIDR network"
                ) from None

    @property
    def trusted_proxy_networks(self) -> list[str]:
        """The trusted proxies in the form uvicorn's middleware takes (``10.0.0.0/8``:
        host bits cleared, which it would otherwise refuse)."""
        return [str(ipaddress.ip_network(p, strict=False)) for p in self.trusted_proxies]

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={_shown(f.name, getattr(self, f.name))!r}" for f in fields(self)
        )
        return f"{type(self).__name__}({shown})"

    @property
    def public_ws_url(self) -> str:
        """The public base URL with ws/wss in place of http/https."""
        base = self.public_url.rstrip("/")
        if base.startswith("https://"):
            return "wss://" + base[len("https://") :]
        return "ws://" + base[len("http://") :]

    @property
    def workers(self) -> int:
        return self.recognizer_workers or (os.cpu_count() or 1)


#: Settings whose variable is not simply MCUSTT_<NAME>.
ENV_NAMES = {
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
}

#: Settings that are credentials: ``repr`` shows whether they are set, never the value.
SECRETS = frozenset({"admin_token", "jwt_secret", "openai_api_key"})
#: Settings that are URLs and may carry a password: ``repr`` masks the password.
URLS = frozenset({"database_url", "redis_url", "openai_base_url"})
MASK = "***"


def _shown(name: str, value: Any) -> Any:
    if value is None or value == "":
        return value
    if name in SECRETS:
        return MASK
    if name in URLS:
        return mask_url(value)
    if name == "ice_servers":
        # TURN servers come with a password ("credential") of their own.
        return [
            {k: MASK if k == "credential" else v for k, v in server.items()}
            if isinstance(server, dict)
            else server
            for server in value
        ]
    return value


def mask_url(url: str) -> str:
    """``url`` with its password (``user:password@``, ``?password=``) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # unparsable: it might be anything
    changed: dict[str, str] = {}
    if parts.password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        changed["netloc"] = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostinfo}"
    if "password" in parts.query.lower():  # libpq takes ?password= too
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        masked = [(k, MASK if k.lower() == "password" else v) for k, v in pairs]
        changed["query"] = urlencode(masked, safe="*")
    # Rebuilt only when masked: urlunsplit would turn sqlite:///x into sqlite:/x.
    return urlunsplit(parts._replace(**changed)) if changed else url
