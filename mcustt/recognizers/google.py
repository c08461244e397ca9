"""Google Cloud Speech-to-Text v2 (Chirp 2 by default) over bidirectional gRPC streaming.

One :class:`GoogleRecognizerStream` serves one utterance, but may use several gRPC
``StreamingRecognize`` calls ("attempts") for it:

* **Rollover.** Google ends a stream after about five minutes ("Max duration of 5
  minutes reached for stream."). Before ``google_stream_limit_s`` (audio sent on the
  call, or wall time since it opened, whichever is larger) the current call is
  half-closed and a new one is opened. Audio is kept from the end of the last final
  (``result_end_offset``) and re-sent on the new call, so words spoken across the cut
  are recognized once, by the new call; results of the old call after the cut are
  ignored. A rollover is started early, right after a final, once a call is past 80 %
  of its limit, so the re-sent tail is short. If the tail is longer than 75 % of the
  limit (Google gave no final for minutes), the old call is instead half-closed and
  drained, so Google finalizes everything it got; a word spoken exactly at that cut
  may then be split, which is the price of never looping.
* **Retry.** Transient gRPC errors (UNAVAILABLE, DEADLINE_EXCEEDED,
  RESOURCE_EXHAUSTED, INTERNAL, ABORTED, OUT_OF_RANGE, UNKNOWN, CANCELLED) open a new
  call after a short, jittered exponential backoff and re-send the un-finalized audio.
  After ``max_retries`` consecutive failures without a final in between, results()
  raises ``RecognizerError(fatal=False)``: this utterance is lost, the next one may
  work. Permanent errors (INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED,
  NOT_FOUND, ...) raise ``RecognizerError(fatal=True)`` at once.

Offsets of results are mapped back to the utterance timeline: every call remembers the
utterance byte offset of its first audio byte.

Configuration (see :class:`mcustt.config.Settings`):

* ``google_endpoint`` unset: ``{location}-speech.googleapis.com`` (or
  ``speech.googleapis.com`` for ``global``), TLS, Application Default Credentials.
* ``google_endpoint=host:port``: same, at another address (a proxy, private endpoint).
* ``google_endpoint=insecure:host:port``: plaintext gRPC without credentials, for an
  emulator or the test fake.
* ``google_languages``: the candidate languages used when a session asks for
  auto-detection (Google picks the most likely one and reports it per result). Chirp 2
  also accepts the single entry ``auto`` (language-agnostic transcription), which is
  also used when the list is empty. Without auto-detection the session's language is
  sent alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import random
import time
import unicodedata
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, cast

import google.auth
import grpc
import structlog
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.cloud.speech_v2 import SpeechAsyncClient
from google.cloud.speech_v2.services.speech.transports import SpeechGrpcAsyncIOTransport
from google.cloud.speech_v2.types import cloud_speech

from mcustt.config import Settings
from mcustt.recognizers.base import (
    Hypothesis,
    Recognizer,
    RecognizerError,
    RecognizerStream,
    Word,
)

log = structlog.get_logger(__name__)

_BYTES_PER_SECOND = 16_000 * 2  # PCM16 LE mono 16 kHz, the seam's fixed format
_BYTES_PER_MS = _BYTES_PER_SECOND // 1000

# v2 rejects audio requests above 15,360 bytes ("Audio chunk can be of a maximum of
# 15360 bytes"; some models allow 25,600): stay well under with 400 ms per request.
MAX_REQUEST_BYTES = 12_800
# Google recommends ~100 ms per request; smaller feeds are coalesced up to this, ...
_MIN_REQUEST_BYTES = 3_200
# ... waiting at most this long for more audio, so coalescing adds little latency.
_LINGER_S = 0.1
# Catching up on a backlog is paced: it keeps near real time what Google wants near
# real time, and a server's early end is seen (call.done()) before the next write.
# Writing into a call the server just closed makes grpc.aio replace the real status
# (say INVALID_ARGUMENT) with "INTERNAL: Internal error from Core".
_MIN_WRITE_INTERVAL_S = 0.01
# feed() waits while this much audio is not yet written to gRPC (backpressure).
_MAX_UNSENT_BYTES = 10 * _BYTES_PER_SECOND
_RESULTS_QUEUE_SIZE = 256
# Past this fraction of the limit, roll over right after the next final (short tail).
_SOFT_ROLLOVER_FRACTION = 0.8
# A re-sent tail longer than this fraction would leave the new call too little room.
_MAX_RESEND_FRACTION = 0.75
# At the limit with a long tail, finals of a burst may still be on their way: wait
# this long (at most; 5 % of the limit in short test set-ups) before flushing instead.
_FINAL_GRACE_MAX_S = 2.0
# How long a half-closed call may take to deliver its last finals and close.
_FLUSH_TIMEOUT_S = 30.0
# After a failed write, how long to wait for the call's status (the real error).
_STATUS_GRACE_S = 2.0
# A failed credentials lookup is not repeated more often than this (``/readyz``
# polls, and on a machine without credentials the lookup probes the GCE metadata
# server with timeouts).
_CREDENTIALS_RETRY_S = 10.0

_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_INSECURE_PREFIX = "insecure:"

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,  # v2's "Max duration of 5 minutes reached for stream."
        grpc.StatusCode.OUT_OF_RANGE,  # v1-style stream duration / audio timeout
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,  # by a proxy or the server: we cancel only on purpose
    }
)


class _BidiCall(Protocol):
    """The parts of api_core's wrapped stream-stream call that are used here.

    The generated client types the call as an ``AsyncIterable`` only; it is really a
    ``grpc.aio.StreamStreamCall`` whose errors are mapped to api_core exceptions.
    """

    async def write(self, request: Any) -> None: ...

    async def done_writing(self) -> None: ...

    def done(self) -> bool: ...

    def cancel(self) -> bool: ...

    def __aiter__(self) -> AsyncIterator[Any]: ...


class _Outcome(enum.Enum):
    FINISHED = "finished"  # all audio sent after finish(), the server closed the call
    ROLLOVER = "rollover"  # half-closed before the limit, results after the cut ignored
    FLUSHED = "flushed"  # half-closed before the limit and drained (tail too long)


class _End:
    """Marks the end of results() in the queue."""


_END = _End()


class _Transient(Exception):
    """A failure worth a new gRPC call."""


class _Attempt:
    """Book-keeping of one gRPC call. Offsets are bytes on the utterance timeline."""

    def __init__(self, number: int, base: int) -> None:
        self.number = number
        self.base = base  # where this call's first audio byte lies in the utterance
        self.sent = base  # audio up to here has been written to this call
        self.opened_at = time.monotonic()
        self.rollover_requested = False
        self.discard = False  # set when half-closing for a rollover: ignore what follows
        self.progressed = False  # a final arrived: retries start counting afresh

    def age_s(self) -> float:
        """How far this call is towards Google's limit (audio or wall time)."""
        audio_s = (self.sent - self.base) / _BYTES_PER_SECOND
        return max(audio_s, time.monotonic() - self.opened_at)


def _status_of(exc: BaseException) -> grpc.StatusCode | None:
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        code = exc.grpc_status_code
        return code if isinstance(code, grpc.StatusCode) else None
    if isinstance(exc, grpc.aio.AioRpcError):
        return cast(grpc.StatusCode, exc.code())
    return None


def _classify(exc: BaseException) -> Exception:
    """Turn a call's failure into ``_Transient`` or a fatal ``RecognizerError``."""
    if isinstance(exc, RecognizerError | _Transient):
        return exc
    code = _status_of(exc)
    if code is None:
        if isinstance(exc, asyncio.InvalidStateError | ConnectionError | TimeoutError):
            return _Transient(f"gRPC call ended: {exc!r}")
        return RecognizerError(f"Google Speech-to-Text failed: {exc!r}", fatal=True)
    message = getattr(exc, "message", None) or str(exc)
    if code in _RETRYABLE:
        return _Transient(f"{code.name}: {message}")
    return RecognizerError(f"Google Speech-to-Text rejected the stream: {code.name}: {message}")


def _duration_bytes(value: Any) -> int:
    """A result offset (a timedelta from proto-plus) as a PCM byte count (whole samples)."""
    if not isinstance(value, datetime.timedelta):
        return 0
    micros = value // datetime.timedelta(microseconds=1)
    samples = (micros * 16 + 500) // 1000
    return max(0, samples * 2)


def _words(alternative: Any, base: int) -> tuple[Word, ...] | None:
    """A final's words (issue 17): Google's offsets count from the call's first audio
    byte (``base`` bytes into the utterance); a word confidence of 0 means none was
    given (proto3 has no null). None: Google sent no words."""
    out = []
    for info in alternative.words:
        text = str(info.word).strip()
        if not text:
            continue
        start = (base + _duration_bytes(info.start_offset)) // _BYTES_PER_MS
        end = (base + _duration_bytes(info.end_offset)) // _BYTES_PER_MS
        score = float(info.confidence)
        out.append(Word(text, start, max(end, start), min(score, 1.0) if score > 0 else None))
    return tuple(out) or None


def _normalize_lang(code: str) -> str | None:
    """BCP-47 casing ("en-us" -> "en-US", "cmn-hans-cn" -> "cmn-Hans-CN")."""
    parts = [part for part in code.replace("_", "-").split("-") if part]
    if not parts or parts[0].lower() == "auto":
        return None
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())
        elif len(part) == 2 and part.isalpha():
            out.append(part.upper())
        else:
            out.append(part.lower())
    return "-".join(out)


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _join(parts: Sequence[str]) -> str:
    """Concatenate interim pieces.

    Google documents plain concatenation (later pieces start with a space), but not
    every model does that, so a space is added where neither side has one, except
    between CJK characters, which are written without spaces.
    """
    text = ""
    for part in parts:
        if not part:
            continue
        if (
            text
            and not text[-1].isspace()
            and not part[0].isspace()
            and not (_is_wide(text[-1]) or _is_wide(part[0]))
        ):
            text += " "
        text += part
    return " ".join(text.split())


def default_endpoint(location: str) -> str:
    """Speech v2 serves regional recognizers only on the region's own endpoint."""
    if location == "global":
        return "speech.googleapis.com"
    return f"{location}-speech.googleapis.com"


class GoogleRecognizer(Recognizer):
    """Google Speech-to-Text v2 streaming (``MCUSTT_RECOGNIZER=google``).

    The client is created lazily (credentials lookup runs in a thread), or injected:
    ``GoogleRecognizer(settings, client=SpeechAsyncClient(transport=...))``. An injected
    client belongs to the caller and is not closed by :meth:`aclose`.
    """

    name = "google"
    honours_keywords = True

    def __init__(
        self,
        settings: Settings,
        *,
        client: SpeechAsyncClient | None = None,
        max_retries: int = 4,
        retry_initial_delay_s: float = 0.25,
        retry_max_delay_s: float = 4.0,
    ) -> None:
        super().__init__(settings)
        self._client = client
        self._owns_client = False
        self._project: str | None = settings.google_project
        self._lock = asyncio.Lock()
        self._credentials_error: tuple[float, RecognizerError] | None = None
        self._streams: weakref.WeakSet[GoogleRecognizerStream] = weakref.WeakSet()
        self.max_retries = max_retries
        self.retry_initial_delay_s = retry_initial_delay_s
        self.retry_max_delay_s = retry_max_delay_s

    @classmethod
    def for_channel(
        cls, settings: Settings, channel: grpc.aio.Channel, **kwargs: Any
    ) -> GoogleRecognizer:
        """A recognizer using an existing gRPC channel (emulators, tests); no credentials."""
        transport = SpeechGrpcAsyncIOTransport(channel=channel)
        return cls(settings, client=SpeechAsyncClient(transport=transport), **kwargs)

    @property
    def model(self) -> str:
        return f"google/{self.settings.google_model}"

    @property
    def recognizer_path(self) -> str:
        project = self._project or self.settings.google_project or "-"
        return f"projects/{project}/locations/{self.settings.google_location}/recognizers/_"

    async def start(self) -> None:
        try:
            await self._ensure_client()
        except RecognizerError as exc:
            # Not fatal at start-up: /readyz reports it until credentials appear.
            log.warning("google_recognizer_unavailable", error=str(exc))

    async def check(self) -> None:
        await self._ensure_client()

    async def aclose(self) -> None:
        streams = list(self._streams)
        await asyncio.gather(*(stream.aclose() for stream in streams), return_exceptions=True)
        async with self._lock:
            client, owned = self._client, self._owns_client
            if owned:
                self._client = None
                self._owns_client = False
        if client is not None and owned:
            transport: Any = client.transport  # close() is untyped in the library
            await transport.close()

    def open_stream(
        self,
        *,
        language: str,
        auto_detect: bool,
        language_hints: Sequence[str] = (),
        keywords: Sequence[str] = (),
    ) -> GoogleRecognizerStream:
        stream = GoogleRecognizerStream(
            self,
            self.language_codes(language, auto_detect, language_hints),
            keywords=list(keywords),
        )
        self._streams.add(stream)
        return stream

    def language_codes(
        self, language: str, auto_detect: bool, hints: Sequence[str] = ()
    ) -> list[str]:
        if hints:
            # The session's candidate languages (issue 15), exactly: Google picks one
            # per result among them (v2 takes up to 3, the hint cap).
            return list(hints)
        if not auto_detect:
            return [language]
        candidates = [code for code in self.settings.google_languages if code]
        if not candidates or "auto" in candidates:
            return ["auto"]
        # The session's own language is always a candidate: a Spanish session on a
        # server whose list is ["en-US"] must still be recognized as Spanish.
        return [language, *[c for c in candidates if c != language]]

    def config_request(
        self, language_codes: Sequence[str], keywords: Sequence[str] = ()
    ) -> cloud_speech.StreamingRecognizeRequest:
        """The first request of every call: where to recognize and how.

        ``keywords`` become an inline phrase set (model adaptation) boosted by
        ``google_keyword_boost``: Google favours them without a stored PhraseSet.
        """
        adaptation = None
        if keywords:
            boost = self.settings.google_keyword_boost
            adaptation = cloud_speech.SpeechAdaptation(
                phrase_sets=[
                    cloud_speech.SpeechAdaptation.AdaptationPhraseSet(
                        inline_phrase_set=cloud_speech.PhraseSet(
                            phrases=[
                                cloud_speech.PhraseSet.Phrase(value=k, boost=boost)
                                for k in keywords
                            ],
                        )
                    )
                ]
            )
        config = cloud_speech.RecognitionConfig(
            explicit_decoding_config=cloud_speech.ExplicitDecodingConfig(
                encoding=cloud_speech.ExplicitDecodingConfig.AudioEncoding.LINEAR16,
                sample_rate_hertz=16_000,
                audio_channel_count=1,
            ),
            model=self.settings.google_model,
            language_codes=list(language_codes),
            # Captions read far better punctuated; Chirp 2 supports it in streaming.
            # Word offsets and confidences (issue 17): finals carry their words.
            features=cloud_speech.RecognitionFeatures(
                enable_automatic_punctuation=True,
                enable_word_time_offsets=True,
                enable_word_confidence=True,
            ),
            adaptation=adaptation,
        )
        return cloud_speech.StreamingRecognizeRequest(
            recognizer=self.recognizer_path,
            streaming_config=cloud_speech.StreamingRecognitionConfig(
                config=config,
                streaming_features=cloud_speech.StreamingRecognitionFeatures(interim_results=True),
            ),
        )

    def retry_delay(self, failures: int) -> float:
        delay = min(self.retry_initial_delay_s * 2.0 ** (failures - 1), self.retry_max_delay_s)
        # Jitter spreads the reconnects of many sessions after a shared outage.
        return delay * random.uniform(0.5, 1.0)

    async def _ensure_client(self) -> SpeechAsyncClient:
        async with self._lock:
            if self._client is None:
                await self._create_client()
            if not self._project:
                raise RecognizerError(
                    "no Google Cloud project: set MCUSTT_GOOGLE_PROJECT "
                    "(or GOOGLE_CLOUD_PROJECT for Application Default Credentials)"
                )
            assert self._client is not None
            return self._client

    async def _create_client(self) -> None:
        endpoint = self.settings.google_endpoint
        if endpoint and endpoint.startswith(_INSECURE_PREFIX):
            address = endpoint[len(_INSECURE_PREFIX) :]
            channel = grpc.aio.insecure_channel(address)
            transport = SpeechGrpcAsyncIOTransport(channel=channel)
            self._client = SpeechAsyncClient(transport=transport)
            self._owns_client = True
            return
        credentials, adc_project = await self._default_credentials()
        if not self._project:
            self._project = adc_project
        options = ClientOptions(
            api_endpoint=endpoint or default_endpoint(self.settings.google_location)
        )
        # Created on the event loop: grpc.aio channels belong to the loop that makes them.
        self._client = SpeechAsyncClient(credentials=credentials, client_options=options)
        self._owns_client = True

    async def _default_credentials(self) -> tuple[Any, str | None]:
        now = time.monotonic()
        if self._credentials_error and now - self._credentials_error[0] < _CREDENTIALS_RETRY_S:
            raise self._credentials_error[1]
        try:
            # File reads and, off Google Cloud, metadata-server probes: not on the loop.
            credentials, project = await asyncio.to_thread(google.auth.default, scopes=_SCOPES)
        except auth_exceptions.GoogleAuthError as exc:
            error = RecognizerError(
                f"no Google Application Default Credentials ({exc}); set "
                "GOOGLE_APPLICATION_CREDENTIALS or run on Google Cloud with a service account"
            )
            self._credentials_error = (now, error)
            raise error from exc
        self._credentials_error = None
        return credentials, project


class GoogleRecognizerStream(RecognizerStream):
    """One utterance; see the module docstring for rollover and retries."""

    def __init__(
        self,
        recognizer: GoogleRecognizer,
        language_codes: list[str],
        *,
        keywords: list[str] | None = None,
    ) -> None:
        self._recognizer = recognizer
        self._language_codes = language_codes
        self._keywords = keywords or []
        # A floor keeps a misconfigured limit from rolling over on every request.
        self._limit_s = max(0.5, recognizer.settings.google_stream_limit_s)
        self._limit_bytes = int(self._limit_s * _BYTES_PER_SECOND) // 2 * 2
        # Audio from the end of the last final on: what a new call must (re-)send.
        self._buffer = bytearray()
        self._buf_start = 0
        self._fed = 0
        self._final_end_ms = 0
        self._finished = False
        self._closed = False
        self._error: RecognizerError | None = None
        self._attempt: _Attempt | None = None
        self._audio_event = asyncio.Event()  # new audio, finish() or a rollover request
        self._space_event = asyncio.Event()  # audio was written out, or the stream ended
        self._final_event = asyncio.Event()  # a final moved the start of the buffer
        self._results: asyncio.Queue[Hypothesis | RecognizerError | _End] = asyncio.Queue(
            _RESULTS_QUEUE_SIZE
        )
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="google-recognizer-stream"
        )

    # -- the seam -------------------------------------------------------------------

    async def feed(self, pcm: bytes) -> None:
        self._raise_if_unusable()
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if len(pcm) % 2:
            raise ValueError("PCM16 audio must have an even byte count")
        if not pcm:
            return
        while self._unsent() >= _MAX_UNSENT_BYTES:
            self._space_event.clear()
            await self._space_event.wait()
            self._raise_if_unusable()
        self._append(pcm)

    def feed_nowait(self, pcm: bytes) -> bool:
        self._raise_if_unusable()
        if self._finished or len(pcm) % 2 or self._unsent() >= _MAX_UNSENT_BYTES:
            return False  # feed() raises or waits
        self._append(pcm)
        return True

    def _append(self, pcm: bytes) -> None:
        self._buffer += pcm
        self._fed += len(pcm)
        self._audio_event.set()

    async def finish(self) -> None:
        self._finished = True
        self._audio_event.set()

    async def results(self) -> AsyncIterator[Hypothesis]:
        while True:
            item = await self._results.get()
            if isinstance(item, _End):
                self._results.put_nowait(item)  # later calls end at once too
                return
            if isinstance(item, RecognizerError):
                self._results.put_nowait(_END)
                raise item
            yield item

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        while not self._results.empty():
            self._results.get_nowait()
        self._results.put_nowait(_END)
        self._space_event.set()

    # -- helpers --------------------------------------------------------------------

    def _raise_if_unusable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RecognizerError("the recognizer stream is closed", fatal=False)

    def _unsent(self) -> int:
        sent = self._attempt.sent if self._attempt is not None else self._buf_start
        return self._fed - sent

    def _drop_until(self, offset: int) -> None:
        """Forget audio before ``offset``: a final covers it, it is never re-sent."""
        offset = min(offset, self._fed)
        if offset > self._buf_start:
            del self._buffer[: offset - self._buf_start]
            self._buf_start = offset

    # -- the supervisor task --------------------------------------------------------

    async def _run(self) -> None:
        terminal: RecognizerError | None = None
        try:
            await self._supervise()
        except RecognizerError as exc:
            terminal = exc
        except Exception as exc:
            log.exception("google_stream_crashed")
            terminal = RecognizerError(f"Google recognizer failed: {exc!r}")
        finally:
            self._attempt = None
        if terminal is not None:
            self._error = terminal
            log.warning("google_stream_failed", error=str(terminal), fatal=terminal.fatal)
        self._space_event.set()
        await self._results.put(terminal if terminal is not None else _END)

    async def _supervise(self) -> None:
        client = await self._recognizer._ensure_client()
        first_request = self._recognizer.config_request(self._language_codes, self._keywords)
        failures = 0
        number = 0
        while True:
            # A call is opened only when there is audio for it: Google ends idle calls.
            while self._fed == self._buf_start and not self._finished:
                self._audio_event.clear()
                await self._audio_event.wait()
            if self._fed == self._buf_start:
                return  # finished, and every byte is covered by a final
            number += 1
            attempt = _Attempt(number, self._buf_start)
            self._attempt = attempt
            try:
                outcome = await self._run_attempt(client, first_request, attempt)
            except _Transient as exc:
                failures = 1 if attempt.progressed else failures + 1
                if failures > self._recognizer.max_retries:
                    raise RecognizerError(
                        f"Google Speech-to-Text kept failing: {exc}", fatal=False
                    ) from exc
                delay = self._recognizer.retry_delay(failures)
                log.warning(
                    "google_stream_retry",
                    call=number,
                    failures=failures,
                    delay_s=delay,
                    error=str(exc),
                )
                await asyncio.sleep(delay)
                continue
            finally:
                self._attempt = None
            failures = 0
            if outcome is _Outcome.FLUSHED:
                # Google has had its final say on everything it got: never re-send it.
                self._drop_until(attempt.sent)
            if outcome is _Outcome.FINISHED:
                return
            log.info(
                "google_stream_rollover",
                call=number,
                flushed=outcome is _Outcome.FLUSHED,
                resend_ms=(attempt.sent - self._buf_start) // _BYTES_PER_MS,
            )

    async def _run_attempt(
        self, client: SpeechAsyncClient, first_request: Any, attempt: _Attempt
    ) -> _Outcome:
        try:
            call = cast(_BidiCall, await client.streaming_recognize())
        except Exception as exc:
            raise _classify(exc) from exc
        sender = asyncio.create_task(self._send(call, first_request, attempt))
        receiver = asyncio.create_task(self._receive(call, attempt))
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if not sender.done():
                # The server closed the call while audio was still due.
                failure = receiver.exception()
                if failure is not None:
                    raise _classify(failure) from failure
                raise _Transient("the server ended the stream early")
            failure = sender.exception()
            if failure is not None:
                # A failed write means the call is over; its status tells why.
                await asyncio.wait({receiver}, timeout=_STATUS_GRACE_S)
                status = receiver.exception() if receiver.done() else None
                failure = status or failure
                raise _classify(failure) from failure
            outcome = sender.result()
            if outcome is _Outcome.ROLLOVER:
                return outcome
            # Half-closed: the server sends its last finals, then ends the call.
            try:
                async with asyncio.timeout(_FLUSH_TIMEOUT_S):
                    await asyncio.wait({receiver})
            except TimeoutError:
                raise _Transient("no end of stream after half-close") from None
            failure = receiver.exception()
            if failure is not None:
                raise _classify(failure) from failure
            return outcome
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
            call.cancel()

    async def _send(self, call: _BidiCall, first_request: Any, attempt: _Attempt) -> _Outcome:
        await call.write(first_request)
        last_write = time.monotonic()
        limit_at = attempt.base + self._limit_bytes
        deadline = attempt.opened_at + self._limit_s
        force = False
        while True:
            if (
                attempt.rollover_requested
                or attempt.sent >= limit_at
                or time.monotonic() >= deadline
            ):
                return await self._half_close(call, attempt)
            unsent = self._fed - attempt.sent
            if unsent == 0 and self._finished:
                await call.done_writing()
                return _Outcome.FINISHED
            if unsent >= _MIN_REQUEST_BYTES or (unsent > 0 and (force or self._finished)):
                pause = last_write + _MIN_WRITE_INTERVAL_S - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                    continue  # a final or a rollover request may have come meanwhile
                if call.done():
                    raise _Transient("the server ended the stream")
                size = min(unsent, MAX_REQUEST_BYTES, limit_at - attempt.sent)
                start = attempt.sent - self._buf_start
                chunk = bytes(self._buffer[start : start + size])
                await call.write(cloud_speech.StreamingRecognizeRequest(audio=chunk))
                last_write = time.monotonic()
                attempt.sent += size
                force = False
                self._space_event.set()
                continue
            timeout = deadline - time.monotonic()
            if unsent > 0:
                timeout = min(timeout, _LINGER_S)
            self._audio_event.clear()
            try:
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._audio_event.wait()
            except TimeoutError:
                force = unsent > 0

    async def _half_close(self, call: _BidiCall, attempt: _Attempt) -> _Outcome:
        max_tail = _MAX_RESEND_FRACTION * self._limit_bytes
        if attempt.sent - self._buf_start > max_tail:
            grace = min(_FINAL_GRACE_MAX_S, 0.05 * self._limit_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    while attempt.sent - self._buf_start > max_tail and not call.done():
                        self._final_event.clear()
                        await self._final_event.wait()
        if attempt.sent - self._buf_start <= max_tail:
            # The new call re-recognizes the tail: what this one says next is ignored.
            attempt.discard = True
            await call.done_writing()
            return _Outcome.ROLLOVER
        await call.done_writing()
        return _Outcome.FLUSHED

    async def _receive(self, call: _BidiCall, attempt: _Attempt) -> None:
        async for response in call:
            if attempt.discard:
                continue
            await self._on_response(response, attempt)

    async def _on_response(self, response: Any, attempt: _Attempt) -> None:
        interim: list[str] = []
        interim_lang: str | None = None
        interim_end: int | None = None
        for result in response.results:
            alternatives = result.alternatives
            text = str(alternatives[0].transcript) if alternatives else ""
            lang = _normalize_lang(str(result.language_code))
            offset = _duration_bytes(result.result_end_offset)
            if result.is_final:
                # Google scores the top alternative of a final (0 when it did not).
                score = float(alternatives[0].confidence) if alternatives else 0.0
                confidence = min(max(score, 0.0), 1.0) if score > 0 else None
                words = _words(alternatives[0], attempt.base) if alternatives else None
                await self._on_final(text, lang, offset, attempt, confidence, words)
            else:
                interim.append(text)
                interim_lang = interim_lang or lang
                if offset:
                    interim_end = attempt.base + offset
        text = _join(interim)
        if text:
            end_ms = (
                None
                if interim_end is None
                else max(interim_end // _BYTES_PER_MS, self._final_end_ms)
            )
            await self._results.put(
                Hypothesis(
                    text,
                    is_final=False,
                    lang=interim_lang,
                    start_ms=self._final_end_ms,
                    end_ms=end_ms,
                )
            )

    async def _on_final(
        self,
        text: str,
        lang: str | None,
        offset: int,
        attempt: _Attempt,
        confidence: float | None = None,
        words: tuple[Word, ...] | None = None,
    ) -> None:
        # Without an offset the final is taken to cover all audio this call has got.
        end = attempt.base + offset if offset else attempt.sent
        end = max(min(end, attempt.sent), self._buf_start)
        self._drop_until(end)
        self._final_event.set()
        attempt.progressed = True
        start_ms = self._final_end_ms
        end_ms = max(end // _BYTES_PER_MS, start_ms)
        self._final_end_ms = end_ms
        text = " ".join(text.split())
        if text:
            await self._results.put(
                Hypothesis(
                    text,
                    is_final=True,
                    lang=lang,
                    start_ms=start_ms,
                    end_ms=end_ms,
                    confidence=confidence,
                    words=words,
                )
            )
        if (
            not self._finished
            and not attempt.rollover_requested
            and attempt.age_s() >= _SOFT_ROLLOVER_FRACTION * self._limit_s
        ):
            attempt.rollover_requested = True
            self._audio_event.set()
