"""File transcription (issue 15), transport-free: a file in, a transcript with speakers
out, stored as an ended session like any other.

The parts, in the order a file meets them:

* :func:`fetch_audio_url`: an ``audio_url`` to a temp file, through the address guard
  (:mod:`mcustt.netguard`) at every hop of its redirects, with size and time caps;
* :func:`probe`: is it audio PyAV decodes, how long, how many channels (in a thread);
* :class:`_Decoder`: PyAV decode + resample to 16 kHz mono PCM16, one ~1 s chunk at a
  time, in a thread (never the event loop). The compressed file stays on disk; the
  decoded PCM goes straight to the recognizer and, when diarization wants it, to a temp
  file that is read back once: at most the decoded PCM (and, for a stereo file, its two
  channels) is ever in memory;
* recognition: the live pipeline's VAD (:class:`mcustt.vad.Segmenter`) cuts utterances,
  each goes to a recognizer stream like a live utterance, several at once (up to the
  recognizer's worker count), so a file is recognized faster than real time;
* diarization (:mod:`mcustt.diarization`): speaker turns; each utterance gets the speaker
  whose turns overlap it most;
* the session: one ended session (``end_reason`` ``"file"``) with its lines, written in
  one transaction; its summary is queued like any ended session's.
"""

from __future__ import annotations

import array
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import av
import httpx
import structlog

from mcustt import wire
from mcustt.config import Settings
from mcustt.denoise import NoiseSuppressor, make_suppressor
from mcustt.diarization import (
    DiarizationError,
    DiarizationUnavailable,
    Diarizer,
    load_diarizer,
)
from mcustt.errors import BadRequest, DailyCapReached, InvalidAudioFormat, MCUSTTError
from mcustt.netguard import check_url, pinned_request
from mcustt.recognizers import Hypothesis, Recognizer, RecognizerError
from mcustt.store.models import Job, Session, Tenant, TranscriptLine
from mcustt.store.repo import Repo
from mcustt.tokens import digest, new_owner_secret, random_id
from mcustt.types import BYTES_PER_MS, SAMPLE_RATE
from mcustt.vad import Audio, End, Segmenter, Start, VadEvent
from mcustt.wire import ErrorCode
from mcustt.words import clamp_confidence, session_words

log = structlog.get_logger(__name__)

#: Decoded audio handed on at a time (1 s of 16 kHz mono PCM16).
CHUNK_BYTES = 1000 * BYTES_PER_MS
#: Audio fed to a recognizer stream per call.
FEED_BYTES = 500 * BYTES_PER_MS
#: Redirects an ``audio_url`` may take (each hop is checked like the first).
MAX_REDIRECTS = 5
#: Text formats whose demuxers open further files or network streams (HLS playlists,
#: ffconcat lists, SDP): refused before FFmpeg sees them, whatever the file is called.
_REFERENCE_FORMATS = (b"#EXTM3U", b"ffconcat", b"v=0")
#: FFmpeg may open nothing but the file itself (no http, rtp, … from inside a file).
_AV_OPTIONS = {"protocol_whitelist": "file"}


class AudioFetchFailed(BadRequest):
    """An ``audio_url`` that could not be fetched (400 ``AUDIO_FETCH_FAILED``)."""

    code = ErrorCode.AUDIO_FETCH_FAILED


@dataclass(frozen=True)
class AudioSource:
    """A file to transcribe: a spooled upload or a fetched ``audio_url``, on disk."""

    path: Path
    #: the upload's file name or the URL's last segment (a default title)
    name: str | None = None


@dataclass(frozen=True)
class FileOptions:
    """What the caller asked for (``POST /api/transcribe``'s fields)."""

    language_hints: list[str] = field(default_factory=list)
    enable_diarization: bool = True
    title: str | None = None
    reduce_noise: bool = False
    keywords: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "language_hints": self.language_hints,
            "enable_diarization": self.enable_diarization,
            "title": self.title,
            "reduce_noise": self.reduce_noise,
            "keywords": self.keywords,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FileOptions:
        return cls(
            language_hints=list(doc.get("language_hints") or []),
            enable_diarization=bool(doc.get("enable_diarization", True)),
            title=doc.get("title"),
            reduce_noise=bool(doc.get("reduce_noise", False)),
            keywords=list(doc.get("keywords") or []),
        )


# -- fetching an audio_url ------------------------------------------------------------------


async def fetch_audio_url(url: str, settings: Settings, *, dest_dir: Path | None = None) -> Path:
    """Download ``url`` to a temp file (the caller deletes it) and return its path.

    http(s) only; every hop's address is checked (private, loopback, link-local… are
    refused unless ``MCUSTT_ALLOW_PRIVATE_URLS``) and connected to as checked;
    redirects are followed by hand, at most :data:`MAX_REDIRECTS`; the body is capped
    at ``transcribe_max_bytes`` while it streams; the whole fetch must finish within
    ``transcribe_fetch_timeout_s``.

    Raises:
        UrlNotAllowed: a hop's URL is refused (400 ``URL_NOT_ALLOWED``).
        AudioFetchFailed: an HTTP error, too many redirects, too large, too slow, or a
            network failure (400 ``AUDIO_FETCH_FAILED``).
    """
    cap = settings.transcribe_max_bytes
    limit_s = settings.transcribe_fetch_timeout_s
    fd, name = tempfile.mkstemp(prefix="mcustt-fetch-", dir=dest_dir)
    path = Path(name)
    try:
        with open(fd, "wb") as out:  # noqa: ASYNC230 - wraps mkstemp's descriptor: no I/O
            async with asyncio.timeout(limit_s):
                await _fetch(url, settings, out, cap)
    except TimeoutError:
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - one local temp file
        raise AudioFetchFailed(
            f"the audio_url did not finish downloading within {limit_s:g} s "
            "(MCUSTT_TRANSCRIBE_FETCH_TIMEOUT_S)"
        ) from None
    except BaseException:
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - one local temp file
        raise
    return path


async def _fetch(url: str, settings: Settings, out: Any, cap: int) -> None:
    timeout = httpx.Timeout(min(30.0, settings.transcribe_fetch_timeout_s))
    # trust_env=False: an operator's HTTP(S)_PROXY must not route around the guard.
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            checked = await check_url(url, allow_private=settings.allow_private_urls)
            request = pinned_request(
                client, checked, method="GET", headers={"accept": "audio/*, */*"}, content=b""
            )
            try:
                response = await client.send(request, stream=True, follow_redirects=False)
            except httpx.HTTPError as exc:
                raise AudioFetchFailed(
                    f"the audio_url could not be fetched: {type(exc).__name__}"
                ) from None
            try:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise AudioFetchFailed("the audio_url redirected without a Location")
                    url = urljoin(url, location)
                    continue
                if not response.is_success:
                    raise AudioFetchFailed(
                        f"the audio_url answered HTTP {response.status_code}; "
                        "it must answer 200 with the audio"
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > cap:
                    raise _too_large(cap)
                size = 0
                try:
                    async for chunk in response.aiter_raw():
                        size += len(chunk)
                        if size > cap:
                            raise _too_large(cap)
                        await asyncio.to_thread(out.write, chunk)
                except httpx.HTTPError as exc:
                    raise AudioFetchFailed(
                        f"the audio_url's download failed: {type(exc).__name__}"
                    ) from None
                if size == 0:
                    raise AudioFetchFailed("the audio_url answered an empty body")
                return
            finally:
                await response.aclose()
    raise AudioFetchFailed(f"the audio_url redirected more than {MAX_REDIRECTS} times")


def _too_large(cap: int) -> AudioFetchFailed:
    return AudioFetchFailed(
        f"the audio_url's file is larger than {cap} bytes (MCUSTT_TRANSCRIBE_MAX_BYTES)"
    )


# -- decoding ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What a file holds, as far as needed before decoding it."""

    #: the audio's length (from the container, or counted by decoding when it is silent)
    duration_ms: int
    channels: int
    format: str


def _not_audio(detail: str) -> InvalidAudioFormat:
    return InvalidAudioFormat(f"the file is not audio this server can decode: {detail}")


def _open(path: Path) -> Any:
    with path.open("rb") as f:
        head = f.read(64).lstrip()
    if not head:
        raise InvalidAudioFormat("the file is empty")
    if head.startswith(_REFERENCE_FORMATS):
        raise _not_audio("playlists and stream descriptions are not accepted")
    try:
        container = av.open(str(path), options=_AV_OPTIONS)
    except Exception as exc:  # whatever FFmpeg makes of a hostile file: not audio
        raise _not_audio(type(exc).__name__) from None
    if not container.streams.audio:
        container.close()
        raise _not_audio("it has no audio stream")
    return container


def probe(path: Path, *, max_audio_s: float) -> Probe:
    """Check that ``path`` is audio PyAV decodes and measure it (blocking: call it in a
    thread). A container that does not state its duration is measured by decoding
    (without resampling or keeping anything).

    Raises:
        InvalidAudioFormat: empty, not audio, no audio stream, nothing decodable.
        BadRequest: longer than ``max_audio_s``.
    """
    container = _open(path)
    try:
        return _measure(container, max_audio_s)
    except MCUSTTError:
        raise
    except Exception as exc:  # whatever FFmpeg makes of a hostile file: not audio
        raise _not_audio(type(exc).__name__) from None
    finally:
        container.close()


def _measure(container: Any, max_audio_s: float) -> Probe:
    stream = container.streams.audio[0]
    channels = stream.codec_context.layout.nb_channels or 1
    duration_ms: int | None = None
    if stream.duration is not None and stream.time_base is not None:
        duration_ms = int(stream.duration * stream.time_base * 1000)
    elif container.duration is not None:
        duration_ms = int(container.duration / 1000)  # AV_TIME_BASE: microseconds
    counted = 0.0
    try:
        for frame in container.decode(stream):
            counted += frame.samples / (frame.sample_rate or SAMPLE_RATE)
            if duration_ms is not None and counted > 0:
                break  # one frame decodes: the stated duration stands
            if counted > max_audio_s:
                break
    except Exception as exc:  # whatever FFmpeg makes of a hostile file
        if counted == 0:
            raise _not_audio(type(exc).__name__) from None
    if counted == 0:
        raise _not_audio("no audio could be decoded from it")
    if duration_ms is None or duration_ms <= 0:
        duration_ms = int(counted * 1000)
    if duration_ms > max_audio_s * 1000:
        raise BadRequest(
            f"the audio is longer than {max_audio_s:g} s (MCUSTT_TRANSCRIBE_MAX_AUDIO_S)"
        )
    return Probe(duration_ms, channels, str(container.format.name))


class _Decoder:
    """PyAV decode + resample of one file to 16 kHz mono PCM16, chunk by chunk.

    Every method blocks (FFmpeg work): the async side calls them in a thread. For a
    two-channel file each chunk comes with the left and right channel (16 kHz PCM16
    each) too, for channel-based diarization.
    """

    def __init__(self, path: Path, *, max_audio_ms: int, keep_channels: bool) -> None:
        self._container = _open(path)
        stream = self._container.streams.audio[0]
        self.stereo = keep_channels and stream.codec_context.layout.nb_channels == 2
        self._mono = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._pair = (
            av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
            if self.stereo
            else None
        )
        self._frames: Iterator[Any] = self._container.decode(stream)
        self._max_bytes = max_audio_ms * BYTES_PER_MS
        self.decoded_bytes = 0
        self._done = False

    def read(self) -> tuple[bytes, bytes | None, bytes | None] | None:
        """About :data:`CHUNK_BYTES` of mono PCM (and its channels), or None at the end."""
        if self._done:
            return None
        mono = bytearray()
        pair = bytearray()
        while len(mono) < CHUNK_BYTES:
            try:
                frame = next(self._frames)
            except StopIteration:
                frame = None
            except Exception as exc:  # whatever FFmpeg makes of a hostile file
                # A corrupt tail: keep what decoded (players do the same), unless nothing did.
                if self.decoded_bytes or mono:
                    log.info("file decoding stopped early", error=type(exc).__name__)
                    frame = None
                else:
                    raise _not_audio(type(exc).__name__) from None
            for out in self._mono.resample(frame):
                mono += bytes(out.planes[0])[: out.samples * 2]
            if self._pair is not None:
                for out in self._pair.resample(frame):
                    pair += bytes(out.planes[0])[: out.samples * 4]
            if frame is None:
                self._done = True
                break
        self.decoded_bytes += len(mono)
        if self.decoded_bytes > self._max_bytes:
            raise BadRequest(
                "the file decodes to much more audio than its header states, or more than "
                "MCUSTT_TRANSCRIBE_MAX_AUDIO_S"
            )
        if not mono:
            return None
        if self._pair is None:
            return bytes(mono), None, None
        samples = array.array("h")
        samples.frombytes(bytes(pair[: len(pair) // 4 * 4]))
        return bytes(mono), samples[0::2].tobytes(), samples[1::2].tobytes()

    def close(self) -> None:
        self._container.close()


# -- recognition ---------------------------------------------------------------------------------


@dataclass
class _Final:
    start_ms: int
    end_ms: int
    text: str
    lang: str
    confidence: float | None
    speaker: str = "0"
    #: issue 17: the words with their timings in the file's time (None: none given)
    words: list[wire.WordTiming] | None = None


#: A diarization result: (speaker, start_ms, end_ms) turns.
TurnSpans = list[tuple[str, int, int]]


def assign_speakers(finals: Sequence[_Final], turns: TurnSpans) -> int:
    """Give each utterance the speaker whose turns overlap it most (the nearest turn when
    none overlaps), numbered "0", "1", … in order of first appearance; how many."""
    names: dict[str, str] = {}
    for utt in finals:
        best: str | None = None
        best_overlap = 0
        nearest: tuple[int, str] | None = None
        totals: dict[str, int] = {}
        for speaker, start, end in turns:
            overlap = min(end, utt.end_ms) - max(start, utt.start_ms)
            if overlap > 0:
                totals[speaker] = totals.get(speaker, 0) + overlap
            gap = max(start - utt.end_ms, utt.start_ms - end, 0)
            if nearest is None or gap < nearest[0]:
                nearest = (gap, speaker)
        for speaker, total in totals.items():
            if total > best_overlap:
                best, best_overlap = speaker, total
        if best is None and nearest is not None:
            best = nearest[1]
        if best is None:
            utt.speaker = "0"
            continue
        utt.speaker = names.setdefault(best, str(len(names)))
    return len(names)


class FileTranscriber:
    """Transcribes files into ended sessions, inline or as ``transcription`` jobs.

    Args:
        repo: the store (sessions, lines, waiting files).
        recognizer: the node's recognizer (as live sessions use it).
        settings: VAD and transcription settings.
        add_usage: counts a tenant's audio (returns its total today, ms).
        usage_today: a tenant's audio today so far (ms), for the daily cap.
        on_ended: called with each new file session (queues its summary).
        diarizer: the diarization seam (:func:`load_diarizer` when not given).
    """

    def __init__(
        self,
        repo: Repo,
        recognizer: Recognizer,
        settings: Settings,
        *,
        add_usage: Callable[[str, int], int],
        usage_today: Callable[[str], Awaitable[int]],
        on_ended: Callable[[Session], Awaitable[object]],
        diarizer: Diarizer | None = None,
    ) -> None:
        self.repo = repo
        self.recognizer = recognizer
        self.settings = settings
        self.add_usage = add_usage
        self.usage_today = usage_today
        self.on_ended = on_ended
        self.diarizer = diarizer if diarizer is not None else load_diarizer(settings)
        self.concurrency = max(1, settings.workers)

    # -- checks before any work -------------------------------------------------------------

    def check_options(self, options: FileOptions) -> None:
        """Refuse what cannot be served, before any work (400s)."""
        self.recognizer.check_languages(options.language_hints)

    async def check_cap(self, tenant: Tenant, audio_ms: int = 0) -> None:
        cap_ms = tenant.daily_minutes_cap * 60_000
        used = await self.usage_today(tenant.id)
        if used + audio_ms > cap_ms:
            raise DailyCapReached(
                f"the tenant's daily audio cap of {tenant.daily_minutes_cap} minutes would "
                f"be passed by this file ({audio_ms // 1000} s; {used // 60_000} minutes "
                "used today)"
            )

    # -- the work ---------------------------------------------------------------------------------

    async def transcribe(
        self,
        tenant: Tenant,
        source: AudioSource,
        options: FileOptions,
        *,
        session_id: str | None = None,
    ) -> wire.FileTranscript:
        """Transcribe the file into a new ended session (``session_id``: the id to give
        it; a job passes its own so a re-run finds the session it already stored)."""
        self.check_options(options)
        info = await asyncio.to_thread(
            probe, source.path, max_audio_s=self.settings.transcribe_max_audio_s
        )
        await self.check_cap(tenant, info.duration_ms)
        started = time.monotonic()
        language = options.language_hints[0] if options.language_hints else "en-US"
        auto_detect = len(options.language_hints) != 1
        keywords = wire.merge_keywords(options.keywords, tenant.keywords)
        # Even without a model a stereo file's channels can tell two speakers apart.
        diarize = options.enable_diarization
        with tempfile.TemporaryDirectory(prefix="mcustt-pcm-") as tmp:
            spool = _Spool(Path(tmp), keep=diarize)
            decoder = await asyncio.to_thread(
                _Decoder,
                source.path,
                # A header may understate the audio (which decided inline or job, and
                # the cap check): decoding stops well past what it stated.
                max_audio_ms=min(
                    int(self.settings.transcribe_max_audio_s * 1000),
                    2 * info.duration_ms + 30_000,
                ),
                keep_channels=diarize,
            )
            try:
                finals = await self._recognize(
                    self._chunks(decoder, spool, options),
                    language=language,
                    auto_detect=auto_detect,
                    hints=options.language_hints,
                    keywords=keywords,
                )
            finally:
                await asyncio.to_thread(decoder.close)
                spool.close()
            duration_ms = decoder.decoded_bytes // BYTES_PER_MS
            if not decoder.decoded_bytes:
                raise _not_audio("no audio could be decoded from it")
            diarization = await self._diarize(options, spool, finals)
        self.add_usage(tenant.id, duration_ms)
        session = await self._store(
            tenant,
            source,
            options,
            finals,
            session_id=session_id,
            language=language,
            auto_detect=auto_detect,
            duration_ms=duration_ms,
        )
        log.info(
            "file transcribed",
            session_id=session.id,
            audio_s=round(duration_ms / 1000, 1),
            took_s=round(time.monotonic() - started, 2),
            utterances=len(finals),
        )
        return _transcript(session.id, finals, diarization, duration_ms)

    async def _chunks(
        self, decoder: _Decoder, spool: _Spool, options: FileOptions
    ) -> AsyncIterator[bytes]:
        suppressor = make_suppressor(self.settings) if options.reduce_noise else None
        while True:
            chunk = await asyncio.to_thread(_read_and_spool, decoder, spool, suppressor)
            if chunk is None:
                return
            yield chunk

    async def _recognize(
        self,
        chunks: AsyncIterator[bytes],
        *,
        language: str,
        auto_detect: bool,
        hints: list[str],
        keywords: list[str],
    ) -> list[_Final]:
        """VAD-cut utterances, each through a recognizer stream, up to
        :attr:`concurrency` at once; the finals in time order."""
        segmenter = Segmenter(
            aggressiveness=self.settings.vad_aggressiveness,
            max_ms=int(self.settings.max_utterance_s * 1000),
        )
        slots = asyncio.Semaphore(self.concurrency)
        finals: list[_Final] = []
        current: bytearray | None = None
        start_ms = 0

        async def utterance(pcm: bytes, start: int, end: int) -> None:
            try:
                finals.extend(
                    await self._utterance(pcm, start, end, language, auto_detect, hints, keywords)
                )
            finally:
                slots.release()

        async def handle(ev: VadEvent, tg: asyncio.TaskGroup) -> None:
            nonlocal current, start_ms
            if isinstance(ev, Start):
                current, start_ms = bytearray(ev.preroll), ev.at_ms
            elif isinstance(ev, Audio):
                if current is not None:
                    current += ev.pcm
            elif isinstance(ev, End) and current is not None:
                pcm, current = bytes(current), None
                await slots.acquire()  # bounds the utterances (and audio) in flight
                tg.create_task(utterance(pcm, start_ms, ev.at_ms))

        try:
            async with asyncio.TaskGroup() as tg:
                async for pcm in chunks:
                    for ev in segmenter.feed(pcm):
                        await handle(ev, tg)
                for ev in segmenter.flush():
                    await handle(ev, tg)
        except BaseExceptionGroup as group:
            # The first error of a failed utterance (or of the decoder) is the answer.
            first = group.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        finals.sort(key=lambda f: (f.start_ms, f.end_ms))
        return finals

    async def _utterance(
        self,
        pcm: bytes,
        start: int,
        end: int,
        language: str,
        auto_detect: bool,
        hints: list[str],
        keywords: list[str],
    ) -> list[_Final]:
        stream = self.recognizer.open_stream(
            language=language,
            auto_detect=auto_detect,
            language_hints=hints,
            keywords=keywords,
        )
        hyps: list[Hypothesis] = []

        async def collect() -> None:
            async for hyp in stream.results():
                if hyp.is_final:
                    hyps.append(hyp)

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(collect())
                for i in range(0, len(pcm), FEED_BYTES):
                    await stream.feed(pcm[i : i + FEED_BYTES])
                await stream.finish()
        except BaseExceptionGroup as group:
            errors = [e for e in group.exceptions if isinstance(e, RecognizerError)]
            if errors and not any(e.fatal for e in errors):
                log.warning("file utterance dropped after a recognizer error", error=errors[0])
                return []
            raise (errors[0] if errors else group.exceptions[0]) from None
        finally:
            await stream.aclose()
        out: list[_Final] = []
        for hyp in hyps:
            text = " ".join(hyp.text.split())
            if not text:
                continue
            s = start + hyp.start_ms if hyp.start_ms is not None else start
            e = start + hyp.end_ms if hyp.end_ms is not None else end
            confidence = hyp.confidence
            out.append(
                _Final(
                    start_ms=s,
                    end_ms=max(e, s),
                    text=text,
                    lang=hyp.lang or language,
                    confidence=float(confidence) if confidence is not None else None,
                    words=session_words(hyp.words, start, s, max(e, s)),
                )
            )
        return out

    async def _diarize(
        self, options: FileOptions, spool: _Spool, finals: list[_Final]
    ) -> wire.DiarizationInfo:
        if not options.enable_diarization:
            return {"status": "disabled"}
        engine = self.diarizer.name
        if not self.diarizer.available and not spool.stereo:
            # Mono audio and no model: nothing to read back (the whole decoded file).
            reason = self.diarizer.unavailable_reason or "diarization is unavailable"
            return {"status": "unavailable", "reason": reason, "engine": engine}
        pcm, channels = await asyncio.to_thread(spool.read_back)
        try:
            turns = await self.diarizer.diarize(pcm, channels=channels)
        except DiarizationUnavailable as exc:
            return {"status": "unavailable", "reason": exc.message, "engine": engine}
        except DiarizationError as exc:
            # The transcript stands without speakers; the response says why.
            log.warning("diarization failed", error=exc.message)
            return {"status": "failed", "reason": exc.message, "engine": engine}
        finally:
            del pcm, channels
        spans = [(t.speaker, t.start_ms, t.end_ms) for t in turns]
        speakers = assign_speakers(finals, spans)
        return {"status": "done", "engine": engine, "speakers": speakers}

    async def _store(
        self,
        tenant: Tenant,
        source: AudioSource,
        options: FileOptions,
        finals: list[_Final],
        *,
        session_id: str | None,
        language: str,
        auto_detect: bool,
        duration_ms: int,
    ) -> Session:
        now = time.time()
        now_ms = int(now * 1000)
        detected = _detected(finals)
        title = options.title or (source.name[:500] if source.name else None)
        session = Session(
            id=session_id or random_id(10),
            tenant_id=tenant.id,
            title=title,
            source_lang=language,
            auto_detect=auto_detect,
            status="ended",
            end_reason="file",
            detected_lang=detected,
            # Nobody holds this secret: a file's session is the tenant's (its key).
            owner_secret_hash=digest(new_owner_secret()),
            last_seq=len(finals),
            audio_ms=duration_ms,
            language_hints=options.language_hints or None,
            keywords=options.keywords or None,
            reduce_noise=options.reduce_noise,
            created_at=now,
            updated_at=now,
            ended_at=now,
        )
        lines = [
            TranscriptLine(
                session_id=session.id,
                seq=i + 1,
                text=f.text,
                lang=f.lang,
                ts=now_ms,
                start_ms=f.start_ms,
                end_ms=f.end_ms,
                speaker=f.speaker,
                # issue 17: the json export of a file's session has its word timings too
                words=[dict(w) for w in f.words] if f.words is not None else None,
                confidence=clamp_confidence(f.confidence),
            )
            for i, f in enumerate(finals)
        ]
        if await self.repo.insert_file_session(session, lines):
            await self.on_ended(session)
        return session

    # -- jobs ---------------------------------------------------------------------------

    async def run_job(self, job: Job) -> wire.FileTranscript:
        """A ``transcription`` job: the stored file, transcribed into the job's session.
        The stored file is deleted once the job is done, or has failed for good."""
        audio_id = str(job.payload["audioId"])
        options = FileOptions.from_json(dict(job.payload.get("options") or {}))
        final_attempt = job.attempts >= job.max_attempts
        try:
            tenant = await self.repo.get_tenant(job.tenant_id)
            if tenant is None:
                raise BadRequest("the tenant no longer exists")
            with tempfile.TemporaryDirectory(prefix="mcustt-job-") as tmp:
                path = Path(tmp) / "audio"
                if not await self.repo.load_file_audio(audio_id, path):
                    raise BadRequest("the job's audio is no longer stored")
                name = job.payload.get("name")
                result = await self.transcribe(
                    tenant,
                    AudioSource(path, name=str(name) if name else None),
                    options,
                    session_id=job.session_id,
                )
        except MCUSTTError as exc:
            if exc.status_code < 500 or final_attempt:
                await self.repo.delete_file_audio(audio_id)
            raise
        except Exception:
            if final_attempt:
                await self.repo.delete_file_audio(audio_id)
            raise
        await self.repo.delete_file_audio(audio_id)
        return result


class _Spool:
    """Decoded PCM kept on disk for diarization (mono, and a stereo file's channels),
    read back once: the only time the whole decoded audio is in memory."""

    def __init__(self, directory: Path, *, keep: bool) -> None:
        self.keep = keep
        self.dir = directory
        self._files: list[Any] = []
        if keep:
            self._files = [(directory / n).open("wb") for n in ("mono", "left", "right")]
        self.stereo = False

    def write(self, mono: bytes, left: bytes | None, right: bytes | None) -> None:
        if not self.keep:
            return
        self._files[0].write(mono)
        if left is not None and right is not None:
            self.stereo = True
            self._files[1].write(left)
            self._files[2].write(right)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def read_back(self) -> tuple[bytes, list[bytes] | None]:
        mono = (self.dir / "mono").read_bytes()
        if not self.stereo:
            return mono, None
        return mono, [(self.dir / "left").read_bytes(), (self.dir / "right").read_bytes()]


def _read_and_spool(
    decoder: _Decoder, spool: _Spool, suppressor: NoiseSuppressor | None
) -> bytes | None:
    """One decoded chunk (in a thread): spooled for diarization, denoised if asked."""
    chunk = decoder.read()
    if chunk is None:
        return None
    mono, left, right = chunk
    spool.write(mono, left, right)
    return suppressor.process(mono) if suppressor is not None else mono


def _detected(finals: Sequence[_Final]) -> str | None:
    """The language most of the recognized time was in."""
    weights: dict[str, int] = {}
    for f in finals:
        weights[f.lang] = weights.get(f.lang, 0) + max(1, f.end_ms - f.start_ms)
    return max(weights, key=lambda k: weights[k]) if weights else None


def _transcript(
    session_id: str,
    finals: Sequence[_Final],
    diarization: wire.DiarizationInfo,
    duration_ms: int,
) -> wire.FileTranscript:
    scores = [f.confidence for f in finals if f.confidence is not None]
    utterances: list[wire.FileUtterance] = [
        {
            "speaker": f.speaker,
            "text": f.text,
            "start_ms": f.start_ms,
            "end_ms": f.end_ms,
            "confidence": None if f.confidence is None else round(f.confidence, 3),
            "language": f.lang,
        }
        for f in finals
    ]
    return {
        "sessionId": session_id,
        "text": " ".join(f.text for f in finals),
        "detected_language": _detected(finals),
        "confidence": round(sum(scores) / len(scores), 3) if scores else None,
        "utterances": utterances,
        "diarization": diarization,
        "duration_ms": duration_ms,
    }
