"""The embedded engine: espeak-ng (the Debian package ``espeak-ng``; ``scripts/install``
installs it).

The program runs as a subprocess (``asyncio.create_subprocess_exec``, never a shell):
the text goes in on stdin, so nothing in it can be taken for an option, and a WAV stream
comes out on stdout, which PyAV encodes to OGG/Opus in a thread. At most
``MCUSTT_TTS_CONCURRENCY`` syntheses run at once per node; the rest wait their turn.

Without the program the engine is :class:`TTSUnavailable` (503), and the rest of the
server works as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import Sequence

import structlog

from mcustt.config import Settings
from mcustt.tts.base import Synthesizer, TTSError, TTSUnavailable
from mcustt.tts.opus import BadWav, encode_ogg_opus, parse_wav

log = structlog.get_logger(__name__)

PROGRAM = "espeak-ng"
#: A synthesis of the longest text allowed takes a few seconds; this only stops a hang.
TIMEOUT_S = 120.0
DEFAULT_VOICE = "en"
_OTHER_LANGUAGE = re.compile(r"\(([A-Za-z0-9-]+) \d+\)")


class EspeakSynthesizer(Synthesizer):
    name = "espeak"

    def __init__(self, settings: Settings, *, program: str = PROGRAM) -> None:
        super().__init__(settings)
        self.program = program
        self._gate = asyncio.Semaphore(settings.tts_concurrency)
        self._voices: list[str] | None = None
        self._voices_lock = asyncio.Lock()

    @property
    def default_voice(self) -> str:
        return self.settings.tts_voice or DEFAULT_VOICE

    def _path(self) -> str:
        path = shutil.which(self.program)
        if path is None:
            raise TTSUnavailable(
                f"text to speech needs {self.program}, which is not installed on this "
                "server (apt-get install espeak-ng; scripts/install does it)",
                retry_after=60,
            )
        return path

    async def check(self) -> None:
        await self.voices()

    async def voices(self) -> Sequence[str]:
        if self._voices is None:
            async with self._voices_lock:
                if self._voices is None:
                    self._voices = await self._list_voices()
        return self._voices

    async def _list_voices(self) -> list[str]:
        out = await self._run(["--voices"], b"", purpose="list voices")
        # "Pty Language Age/Gender VoiceName File Other Languages": what -v takes is
        # the language column, and each "(lang priority)" of the last (e.g. "en").
        names: list[str] = []
        for row in out.decode("utf-8", "replace").splitlines()[1:]:
            cols = row.split()
            if len(cols) < 2:
                continue
            for name in [cols[1], *_OTHER_LANGUAGE.findall(row)]:
                if name not in names:
                    names.append(name)
        names.sort()
        if not names:
            raise TTSUnavailable(f"{self.program} lists no voices (is espeak-ng-data installed?)")
        if self.default_voice not in names:
            raise TTSUnavailable(
                f"MCUSTT_TTS_VOICE={self.default_voice!r} is not an espeak-ng voice"
            )
        return names

    async def synthesize(self, text: str, *, voice: str | None = None) -> bytes:
        chosen = await self.resolve_voice(voice)
        async with self._gate:
            wav = await self._run(
                ["-v", chosen, "--stdout", "--stdin"], text.encode("utf-8"), purpose="speak"
            )
            try:
                pcm, rate, channels = parse_wav(wav)
                if not pcm:
                    # Nothing speakable in the text (punctuation only): a moment of
                    # silence, not an error (the text was valid input).
                    pcm = bytes(2 * channels * (rate // 10))
                return await asyncio.to_thread(encode_ogg_opus, pcm, rate, channels)
            except (BadWav, ValueError) as exc:  # PyAV's errors are ValueErrors too
                raise TTSError(f"{self.program} gave unusable audio: {exc}") from exc

    async def _run(self, args: list[str], stdin: bytes, *, purpose: str) -> bytes:
        """The program's stdout; its failure, or a hang, is a :class:`TTSError`."""
        try:
            proc = await asyncio.create_subprocess_exec(
                self._path(),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise TTSUnavailable(f"{self.program} could not be started: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), TIMEOUT_S)
        except TimeoutError:
            raise TTSError(f"{self.program} did not finish in {TIMEOUT_S:g}s") from None
        finally:
            # Cancelled or timed out: the process must not outlive the request.
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    await proc.wait()
        if proc.returncode != 0:
            detail = err.decode("utf-8", "replace").strip()[:300]
            log.warning("tts.espeak.failed", purpose=purpose, rc=proc.returncode, stderr=detail)
            raise TTSError(f"{self.program} failed (exit {proc.returncode}): {detail}")
        return out
