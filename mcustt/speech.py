"""Text to speech as a service (issue 16): speak, store under the tenant, hand out a
signed URL that expires.

The file is stored in the database (``tts_audio``), so any node serves any URL. A URL is
a capability: ``/media/tts/{id}.ogg?exp={unix seconds}&sig={HMAC-SHA256}``, the MAC over
the id and the expiry with a key derived from the JWT secret every node shares (so a
node can verify what another signed, and the JWT secret itself is never used for two
purposes). Whoever holds the URL may fetch the file until ``exp``; no tenant key is
involved. The file is deleted when its last URL expires (retention, or at the first
fetch after that).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

import structlog

from mcustt import wire
from mcustt.config import Settings
from mcustt.errors import BadRequest, Forbidden, MCUSTTError, NotFound
from mcustt.store.models import Tenant, TTSAudio
from mcustt.store.repo import Repo
from mcustt.tokens import random_id
from mcustt.tts import FORMAT, Synthesizer
from mcustt.wire import ErrorCode

log = structlog.get_logger(__name__)

_KEY_LABEL = b"mcustt/tts-signed-url/v1"
_EXP = re.compile(r"[0-9]{1,12}")
_SIG = re.compile(r"[A-Za-z0-9_-]{43}")
ID_PATTERN = re.compile(r"tts_[A-Za-z0-9]{16}")


class SignedUrlExpired(MCUSTTError):
    """A genuine URL past its ``exp``: 410, ask the API for a new one."""

    status_code = 410
    code = ErrorCode.SIGNED_URL_EXPIRED


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Spoken:
    row: TTSAudio
    url: str


class TextToSpeech:
    """Args:
    repo: the store.
    synthesizer: the engine (``MCUSTT_TTS``).
    settings: URL lifetime, text bound, public URL.
    secret: the JWT secret shared by every node (the URL key is derived from it).
    """

    def __init__(
        self, repo: Repo, synthesizer: Synthesizer, settings: Settings, *, secret: str
    ) -> None:
        self.repo = repo
        self.synthesizer = synthesizer
        self.settings = settings
        self._key = hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()

    # -- speaking ------------------------------------------------------------------------

    def check_text(self, text: str) -> str:
        """The text to speak, or 400: blank, or longer than ``MCUSTT_TTS_MAX_CHARS``."""
        if not text.strip():
            raise BadRequest("text must not be blank")
        limit = min(self.settings.tts_max_chars, wire.TTS_MAX_TEXT)
        if len(text) > limit:
            raise BadRequest(f"text is {len(text)} characters; the limit is {limit}")
        return text

    async def speak(
        self,
        tenant: Tenant,
        text: str,
        *,
        voice: str | None = None,
        session_id: str | None = None,
        message_id: str | None = None,
    ) -> Spoken:
        """Synthesize, store and sign.

        Raises:
            BadRequest: blank or too long text; UnknownVoice: not one of the voices.
            TTSUnavailable (503), TTSError (502): the engine.
        """
        text = self.check_text(text)
        await self.synthesizer.check()
        chosen = await self.synthesizer.resolve_voice(voice)
        started = time.perf_counter()
        audio = await self.synthesizer.synthesize(text, voice=chosen)
        now = time.time()
        row = TTSAudio(
            id="tts_" + random_id(16),
            tenant_id=tenant.id,
            session_id=session_id,
            message_id=message_id,
            voice=chosen,
            format=FORMAT,
            audio=audio,
            size=len(audio),
            created_at=now,
            # Whole seconds: the URL carries this exact value as its exp.
            expires_at=float(int(now) + self.settings.tts_url_ttl_s),
        )
        row = await self.repo.insert_tts_audio(row)
        log.info(
            "tts.spoken",
            audio_id=row.id,
            engine=self.synthesizer.name,
            voice=chosen,
            chars=len(text),
            bytes=row.size,
            ms=round((time.perf_counter() - started) * 1000),
        )
        return Spoken(row, self.url(row))

    async def for_tenant(self, tenant: Tenant, audio_id: str) -> Spoken:
        """The tenant's audio with its URL (re-signed to its expiry); another tenant's,
        an expired or an unknown one is 404."""
        row = await self.repo.get_tts_audio(audio_id) if ID_PATTERN.fullmatch(audio_id) else None
        if row is None or row.tenant_id != tenant.id or row.expires_at <= time.time():
            raise NotFound("no such audio", code=ErrorCode.TTS_AUDIO_NOT_FOUND)
        return Spoken(row, self.url(row))

    # -- signed URLs -----------------------------------------------------------------------

    def sign(self, audio_id: str, exp: int) -> str:
        mac = hmac.new(self._key, f"{audio_id}\n{exp}".encode(), hashlib.sha256)
        return _b64(mac.digest())

    def url(self, row: TTSAudio) -> str:
        exp = int(row.expires_at)
        base = self.settings.public_url.rstrip("/")
        return f"{base}/media/tts/{row.id}.ogg?exp={exp}&sig={self.sign(row.id, exp)}"

    async def fetch(self, audio_id: str, exp: str | None, sig: str | None) -> TTSAudio:
        """The audio a signed URL names.

        Raises:
            Forbidden: no, a malformed or a wrong signature (``SIGNED_URL_INVALID``).
            SignedUrlExpired: a genuine URL past its expiry (410).
            NotFound: signed, unexpired, but gone.
        """
        if (
            exp is None
            or sig is None
            or not _EXP.fullmatch(exp)
            or not _SIG.fullmatch(sig)
            or not hmac.compare_digest(sig, self.sign(audio_id, int(exp)))
        ):
            raise Forbidden(
                "this link is not valid (altered or incomplete); ask for a new one",
                code=ErrorCode.SIGNED_URL_INVALID,
            )
        now = time.time()
        if int(exp) <= now:
            raise SignedUrlExpired("this link has expired; ask for a new one")
        row = await self.repo.get_tts_audio(audio_id)
        if row is None:
            raise NotFound("this audio no longer exists", code=ErrorCode.TTS_AUDIO_NOT_FOUND)
        if row.expires_at <= now:  # cannot outlive its URL; the URL check above is first
            raise SignedUrlExpired("this link has expired; ask for a new one")
        return row


def audio_json(spoken: Spoken) -> wire.TtsAudio:
    row = spoken.row
    return {
        "id": row.id,
        "audioUrl": spoken.url,
        "expiresAt": row.expires_at,
        "voice": row.voice,
        "format": "ogg_opus",
        "bytes": row.size,
        "createdAt": row.created_at,
    }
