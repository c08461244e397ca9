"""Speech from OpenAI's ``POST /v1/audio/speech`` (or any server that speaks it).

``{model, input, voice, response_format: "opus"}``: the answer is an OGG/Opus file
already, stored as it comes. The key, base URL and timeout are the summarizer's
(``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``MCUSTT_OPENAI_TIMEOUT_S``); the model is
``MCUSTT_OPENAI_TTS_MODEL``. Failures are retried by the summarizer's rules (timeouts,
connection errors, 408/409/429/5xx with backoff, ``Retry-After`` honoured; other 4xx at
once, as :class:`TTSError`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog
from openai import AsyncOpenAI

from mcustt.config import Settings
from mcustt.summarizers.openai import RetryPolicy, call_with_retries
from mcustt.tts.base import Synthesizer, TTSError, TTSUnavailable
from mcustt.tts.opus import is_ogg_opus

log = structlog.get_logger(__name__)

#: The speech endpoint's built-in voices (``gpt-4o-mini-tts`` has them all; ``tts-1``
#: lacks ballad, verse, marin and cedar, which it refuses with a 400).
VOICES = (
    "alloy",
    "ash",
    "ballad",
    "cedar",
    "coral",
    "echo",
    "fable",
    "marin",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
DEFAULT_VOICE = "alloy"


class OpenAISynthesizer(Synthesizer):
    name = "openai"

    def __init__(
        self,
        settings: Settings,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(settings)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self._client: AsyncOpenAI | None = None

    @property
    def default_voice(self) -> str:
        return self.settings.tts_voice or DEFAULT_VOICE

    async def voices(self) -> Sequence[str]:
        await self.check()
        if self.default_voice not in VOICES:
            return (*VOICES, self.default_voice)  # a custom voice the operator named
        return VOICES

    async def check(self) -> None:
        # Configuration only: a probe of the API would spend quota.
        if not self.settings.openai_api_key:
            raise TTSUnavailable("MCUSTT_TTS=openai needs OPENAI_API_KEY", retry_after=60)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def synthesize(self, text: str, *, voice: str | None = None) -> bytes:
        await self.check()
        chosen = await self.resolve_voice(voice)
        client = self._get_client()

        async def speak() -> bytes:
            response = await client.audio.speech.create(
                model=self.settings.openai_tts_model,
                input=text,
                voice=chosen,
                response_format="opus",
            )
            audio = response.content
            if not is_ogg_opus(audio):
                raise TTSError(
                    f"openai answered {len(audio)} bytes that are not OGG/Opus "
                    f"(starting {audio[:8]!r})"
                )
            return audio

        return await call_with_retries(
            speak,
            retry=self.retry,
            sleep=self._sleep,
            timeout_s=self.settings.openai_timeout_s,
            error=TTSError,
            event="tts.openai",
        )

    def _get_client(self) -> AsyncOpenAI:
        if self._client is None:
            self._client = AsyncOpenAI(
                api_key=self.settings.openai_api_key,
                base_url=self.settings.openai_base_url,
                timeout=self.settings.openai_timeout_s,
                max_retries=0,  # retries are ours (above), bounded and logged
            )
        return self._client
