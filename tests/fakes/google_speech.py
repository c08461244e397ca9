"""A local fake of Google Speech-to-Text v2 ``StreamingRecognize`` (a ``grpc.aio`` server).

It speaks the real wire protocol with the library's own proto-plus messages, so the
real ``SpeechAsyncClient`` talks to it over ``grpc.aio.insecure_channel``.

"Recognition" is deterministic: audio is a script. :meth:`FakeSpeech.script` renders
text into PCM where every word is a run of one constant, word-specific sample value
and silence is zeros. The fake decodes what it really receives, so audio the client
loses or sends twice shows up as missing or repeated words.

Like Google it

* requires a first request with ``recognizer`` and ``streaming_config`` (explicit
  LINEAR16, 16000 Hz, 1 channel, a known model, a language), then audio only;
* rejects audio requests above 15,360 bytes with INVALID_ARGUMENT ("Audio chunk can
  be of a maximum of 15360 bytes. Received audio of N bytes instead.");
* ends a stream whose audio passes ``stream_limit_s`` with ABORTED ("Max duration of
  ... reached for stream.", what v2 says at five minutes);
* sends interim results while audio flows (a stable and an unstable piece, to be
  concatenated) and an ``is_final`` result with ``result_end_offset`` once
  ``final_silence_ms`` of silence follows words, and for what is left at half-close;
* puts the final's words in its top alternative when the config asks
  (``features.enable_word_time_offsets``: ``start_offset``/``end_offset`` from the
  stream's first audio byte; ``enable_word_confidence``: a ``confidence`` per word,
  else 0, proto3's "not set").

Tests inject faults with :meth:`FakeSpeech.fail_stream` and inspect every stream and
request in :attr:`FakeSpeech.streams`.
"""

from __future__ import annotations

import array
import datetime
import itertools
import re
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud.speech_v2.types import cloud_speech

SAMPLE_RATE = 16_000
MAX_CHUNK_BYTES = 15_360
_RECOGNIZER_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/recognizers/[^/]+$")
_LINEAR16 = cloud_speech.ExplicitDecodingConfig.AudioEncoding.LINEAR16


def _ms_to_samples(ms: float) -> int:
    return round(ms * SAMPLE_RATE / 1000)


def _offset(samples: int) -> datetime.timedelta:
    return datetime.timedelta(microseconds=samples * 1_000_000 // SAMPLE_RATE)


@dataclass
class Script:
    """PCM for a text, and what a correct recognizer must make of it."""

    pcm: bytes
    sentences: list[str]  # one final each
    final_end_ms: list[int]  # where the fake's final of each sentence ends
    #: where each word is, (start, end) in ms of the script (issue 17's word offsets)
    word_ms: list[tuple[int, int]] = field(default_factory=list)

    @property
    def words(self) -> list[str]:
        return " ".join(self.sentences).split()

    @property
    def duration_ms(self) -> int:
        return len(self.pcm) // 32


@dataclass
class Fault:
    code: grpc.StatusCode
    after_audio_requests: int
    message: str


@dataclass
class RecordedStream:
    """One ``StreamingRecognize`` call as the fake saw it."""

    index: int  # 1-based, in arrival order
    metadata: dict[str, str] = field(default_factory=dict)
    requests: list[cloud_speech.StreamingRecognizeRequest] = field(default_factory=list)
    config_request: cloud_speech.StreamingRecognizeRequest | None = None
    audio: bytearray = field(default_factory=bytearray)
    audio_sizes: list[int] = field(default_factory=list)
    responses: list[cloud_speech.StreamingRecognizeResponse] = field(default_factory=list)
    half_closed: bool = False  # the client said it was done writing
    cancelled: bool = False  # the client cancelled the call
    ended_mid_word: bool = False  # the audio stopped inside a word
    status: grpc.StatusCode | None = None  # None while running (or when cancelled)
    details: str = ""

    @property
    def config(self) -> Any:
        assert self.config_request is not None
        return self.config_request.streaming_config

    @property
    def finals(self) -> list[str]:
        return [
            result.alternatives[0].transcript
            for response in self.responses
            for result in response.results
            if result.is_final
        ]

    @property
    def audio_s(self) -> float:
        return len(self.audio) / (2 * SAMPLE_RATE)


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Decoder:
    """Turns one stream's audio into Google-like responses."""

    def __init__(
        self,
        words: dict[int, str],
        *,
        language: str,
        final_silence_samples: int,
        min_word_samples: int,
        word_times: bool = False,
        word_confidence: bool = False,
    ) -> None:
        self._words = words
        self._word_times = word_times
        self._word_confidence = word_confidence
        self._run_start = 0  # the sample where the current run began
        self._pending_times: list[tuple[int, int]] = []  # each pending word's samples
        self._language = language
        self._final_silence = final_silence_samples
        self._min_word = min_word_samples
        self.pos = 0  # samples received
        self._run_value = 0
        self._run_len = 0
        self._pending: list[str] = []
        self._last_interim: str | None = None

    @property
    def in_word(self) -> bool:
        return self._run_value != 0

    def feed(self, audio: bytes) -> list[cloud_speech.StreamingRecognizeResponse]:
        samples = array.array("h")
        samples.frombytes(audio)
        if sys.byteorder == "big":
            samples.byteswap()
        responses = []
        for value, group in itertools.groupby(samples):
            count = sum(1 for _ in group)
            if value == self._run_value:
                self._run_len += count
            else:
                self._close_run()
                self._run_value, self._run_len = value, count
                self._run_start = self.pos
            self.pos += count
            if self._run_value == 0 and self._pending and self._run_len >= self._final_silence:
                # Google's endpointer fires inside the pause, not at the word's end.
                at = self.pos - (self._run_len - self._final_silence)
                responses.append(self._final(at))
        interim = self._interim()
        if interim is not None:
            responses.append(interim)
        return responses

    def flush(self) -> list[cloud_speech.StreamingRecognizeResponse]:
        self._close_run()
        self._run_value, self._run_len = 0, 0
        return [self._final(self.pos)] if self._pending else []

    def _word(self, value: int) -> str:
        return self._words.get(value, f"<{value}>")

    def _close_run(self) -> None:
        if self._run_value != 0 and self._run_len >= self._min_word:
            self._pending.append(self._word(self._run_value))
            self._pending_times.append((self._run_start, self._run_start + self._run_len))

    def _final(self, at: int) -> cloud_speech.StreamingRecognizeResponse:
        words = []
        if self._word_times or self._word_confidence:
            for i, (word, (start, end)) in enumerate(
                zip(self._pending, self._pending_times, strict=True)
            ):
                info = cloud_speech.WordInfo(word=word)
                if self._word_times:
                    info.start_offset = _offset(start)
                    info.end_offset = _offset(end)
                if self._word_confidence:
                    info.confidence = 0.9 - 0.01 * (i % 10)  # varies, like the real one
                words.append(info)
        result = cloud_speech.StreamingRecognitionResult(
            alternatives=[
                cloud_speech.SpeechRecognitionAlternative(
                    transcript=" ".join(self._pending), confidence=0.93, words=words
                )
            ],
            is_final=True,
            result_end_offset=_offset(at),
            language_code=self._language,
        )
        self._pending = []
        self._pending_times = []
        self._last_interim = None
        return cloud_speech.StreamingRecognizeResponse(results=[result])

    def _interim(self) -> cloud_speech.StreamingRecognizeResponse | None:
        current = self._word(self._run_value) if self._run_len >= self._min_word else None
        if self._run_value == 0:
            current = None
        pieces: list[tuple[str, float]] = []
        if self._pending:
            pieces.append((" ".join(self._pending), 0.9))
        if current is not None:
            # Like Google's examples: later pieces start with a space.
            pieces.append(((" " if pieces else "") + current, 0.01))
        text = "".join(piece for piece, _ in pieces)
        if not pieces or text == self._last_interim:
            return None
        self._last_interim = text
        return cloud_speech.StreamingRecognizeResponse(
            results=[
                cloud_speech.StreamingRecognitionResult(
                    alternatives=[cloud_speech.SpeechRecognitionAlternative(transcript=piece)],
                    stability=stability,
                    result_end_offset=_offset(self.pos),
                    language_code=self._language,
                )
                for piece, stability in pieces
            ]
        )


class FakeSpeech:
    """The fake server. ``async with FakeSpeech() as fake:`` then ``fake.address``."""

    def __init__(
        self,
        *,
        stream_limit_s: float = 305.0,
        final_silence_ms: float = 250.0,
        min_word_ms: float = 40.0,
        max_chunk_bytes: int = MAX_CHUNK_BYTES,
        models: Sequence[str] = ("chirp_2", "long", "short"),
        detected_language: str = "en-us",
    ) -> None:
        self.stream_limit_s = stream_limit_s
        self.final_silence_ms = final_silence_ms
        self.min_word_ms = min_word_ms
        self.max_chunk_bytes = max_chunk_bytes
        self.models = set(models)
        self.detected_language = detected_language
        self.streams: list[RecordedStream] = []
        self.address = ""
        self._faults: dict[int, Fault] = {}
        self._fail_all: Fault | None = None
        self._values: dict[str, int] = {}
        self._words: dict[int, str] = {}
        self._server: grpc.aio.Server | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> str:
        handler = grpc.method_handlers_generic_handler(
            "google.cloud.speech.v2.Speech",
            {
                "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
                    self._streaming_recognize,
                    request_deserializer=cloud_speech.StreamingRecognizeRequest.deserialize,
                    response_serializer=cloud_speech.StreamingRecognizeResponse.serialize,
                )
            },
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    async def __aenter__(self) -> FakeSpeech:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- test controls ------------------------------------------------------------

    def fail_stream(
        self,
        index: int | None,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        *,
        after_audio_requests: int = 0,
        message: str = "The service is currently unavailable.",
    ) -> None:
        """Abort stream ``index`` (1-based; None = every stream) after K audio requests."""
        fault = Fault(code, after_audio_requests, message)
        if index is None:
            self._fail_all = fault
        else:
            self._faults[index] = fault

    def word_value(self, word: str) -> int:
        if word not in self._values:
            value = 1000 + 64 * len(self._values)
            assert value < 32_767, "vocabulary too large"
            self._values[word] = value
            self._words[value] = word
        return self._values[word]

    def script(
        self,
        text: str,
        *,
        word_ms: float = 150.0,
        gap_ms: float = 50.0,
        pause_ms: float = 400.0,
        lead_ms: float = 100.0,
        tail_ms: float = 400.0,
    ) -> Script:
        """PCM for ``text``; ``/`` separates sentences (a pause: one final each).

        ``pause_ms`` and ``tail_ms`` should exceed ``final_silence_ms`` so that every
        sentence gets its own final at a predictable offset.
        """
        samples = array.array("h")
        sentences: list[str] = []
        final_end_ms: list[int] = []
        word_times: list[tuple[int, int]] = []
        samples.extend([0] * _ms_to_samples(lead_ms))
        chunks = [chunk.split() for chunk in text.split("/")]
        chunks = [chunk for chunk in chunks if chunk]
        for s, words in enumerate(chunks):
            for w, word in enumerate(words):
                start = len(samples)
                samples.extend([self.word_value(word)] * _ms_to_samples(word_ms))
                word_times.append((start * 1000 // SAMPLE_RATE, len(samples) * 1000 // SAMPLE_RATE))
                if w < len(words) - 1:
                    samples.extend([0] * _ms_to_samples(gap_ms))
            sentences.append(" ".join(words))
            end = len(samples) + _ms_to_samples(self.final_silence_ms)
            final_end_ms.append(end * 1000 // SAMPLE_RATE)
            silence = pause_ms if s < len(chunks) - 1 else tail_ms
            samples.extend([0] * _ms_to_samples(silence))
        if sys.byteorder == "big":
            samples.byteswap()
        return Script(samples.tobytes(), sentences, final_end_ms, word_times)

    # -- the RPC ------------------------------------------------------------------

    async def _streaming_recognize(
        self,
        request_iterator: AsyncIterator[cloud_speech.StreamingRecognizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[cloud_speech.StreamingRecognizeResponse]:
        stream = RecordedStream(index=len(self.streams) + 1)
        stream.metadata = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        self.streams.append(stream)
        fault = self._faults.get(stream.index, self._fail_all)
        decoder: _Decoder | None = None
        limit = _ms_to_samples(self.stream_limit_s * 1000)
        try:
            async for request in request_iterator:
                stream.requests.append(request)
                if decoder is None:
                    decoder = self._open(request)
                    stream.config_request = request
                    if fault is not None and fault.after_audio_requests == 0:
                        raise _Abort(fault.code, fault.message)
                    continue
                audio = self._audio_of(request)
                if decoder.pos + len(audio) // 2 > limit:
                    raise _Abort(
                        grpc.StatusCode.ABORTED,
                        f"Max duration of {self.stream_limit_s:g} seconds reached for stream.",
                    )
                stream.audio += audio
                stream.audio_sizes.append(len(audio))
                for response in decoder.feed(audio):
                    stream.responses.append(response)
                    yield response
                if fault is not None and len(stream.audio_sizes) >= fault.after_audio_requests:
                    raise _Abort(fault.code, fault.message)
            if decoder is None:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "No streaming config was sent.")
            stream.ended_mid_word = decoder.in_word
            stream.half_closed = True
            for response in decoder.flush():
                stream.responses.append(response)
                yield response
            stream.status = grpc.StatusCode.OK
        except _Abort as abort:
            stream.status, stream.details = abort.code, abort.details
            await context.abort(abort.code, abort.details)
        finally:
            # A cancelled call surfaces as CancelledError or as GeneratorExit at a yield.
            if stream.status is None:
                stream.cancelled = True
            if decoder is not None and not stream.half_closed:
                stream.ended_mid_word = decoder.in_word

    def _open(self, request: cloud_speech.StreamingRecognizeRequest) -> _Decoder:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if request.audio:
            raise _Abort(invalid, "The first request must not contain audio.")
        if not _RECOGNIZER_RE.match(request.recognizer):
            raise _Abort(invalid, f"Invalid recognizer name: {request.recognizer!r}.")
        if "streaming_config" not in request:
            raise _Abort(invalid, "The first request must contain a streaming_config.")
        config = request.streaming_config.config
        decoding = config.explicit_decoding_config
        if "explicit_decoding_config" not in config or (
            decoding.encoding != _LINEAR16
            or decoding.sample_rate_hertz != SAMPLE_RATE
            or decoding.audio_channel_count != 1
        ):
            raise _Abort(invalid, "Expected explicit LINEAR16 audio at 16000 Hz, 1 channel.")
        if self.models and config.model not in self.models:
            raise _Abort(invalid, f'The model "{config.model}" does not exist.')
        codes = list(config.language_codes)
        if not codes:
            raise _Abort(invalid, "Missing language code.")
        if len(codes) == 1 and codes[0] != "auto":
            language = codes[0].lower()
        else:
            language = self.detected_language
        return _Decoder(
            self._words,
            language=language,
            final_silence_samples=_ms_to_samples(self.final_silence_ms),
            min_word_samples=_ms_to_samples(self.min_word_ms),
            word_times=bool(config.features.enable_word_time_offsets),
            word_confidence=bool(config.features.enable_word_confidence),
        )

    def _audio_of(self, request: cloud_speech.StreamingRecognizeRequest) -> bytes:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if request.recognizer or "streaming_config" in request:
            raise _Abort(invalid, "Only the first request may carry a configuration.")
        audio = bytes(request.audio)
        if len(audio) > self.max_chunk_bytes:
            raise _Abort(
                invalid,
                f"Audio chunk can be of a maximum of {self.max_chunk_bytes} bytes. "
                f"Received audio of {len(audio)} bytes instead.",
            )
        if len(audio) % 2:
            raise _Abort(invalid, "LINEAR16 audio must have an even number of bytes.")
        return audio
