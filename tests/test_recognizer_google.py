"""The google recognizer against a local fake of Speech-to-Text v2 (tests/fakes)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fakes.google_speech import MAX_CHUNK_BYTES, FakeSpeech, Script
from google.api_core import exceptions as api_exceptions
from google.cloud.speech_v2 import SpeechAsyncClient
from google.cloud.speech_v2.services.speech.transports import SpeechGrpcAsyncIOTransport
from google.cloud.speech_v2.types import cloud_speech

from mcustt.config import Settings
from mcustt.recognizers import load_recognizer
from mcustt.recognizers.base import Hypothesis, RecognizerError
from mcustt.recognizers.google import MAX_REQUEST_BYTES, GoogleRecognizer, default_endpoint
from mcustt.testing.recognizer import recognize as recognize_utterance

pytestmark = pytest.mark.timeout(30)

FRAME = 640  # 20 ms, what the session pipeline feeds

SENTENCES = (
    "alpha bravo charlie delta / echo foxtrot golf / hotel india juliet kilo lima / "
    "mike november / oscar papa quebec romeo sierra tango / uniform victor whiskey / "
    "xray yankee zulu one two three four / five six / seven eight nine ten eleven / "
    "twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen / twenty"
)


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "recognizer": "google",
        "google_project": "test-project",
        "google_location": "us-central1",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSpeech]:
    async with FakeSpeech(stream_limit_s=305.0) as server:
        yield server


@pytest.fixture
async def channel(fake: FakeSpeech) -> AsyncIterator[grpc.aio.Channel]:
    ch = grpc.aio.insecure_channel(fake.address)
    yield ch
    await ch.close()


def recognizer_for(channel: grpc.aio.Channel, **overrides: Any) -> GoogleRecognizer:
    return GoogleRecognizer.for_channel(
        settings(**overrides),
        channel,
        retry_initial_delay_s=0.01,
        retry_max_delay_s=0.05,
    )


#: Every utterance here is fed a 20 ms frame per 2 ms, faster than live but paced.
recognize = functools.partial(recognize_utterance, frame=FRAME, pace_s=0.002)


def finals(hypotheses: list[Hypothesis]) -> list[Hypothesis]:
    return [h for h in hypotheses if h.is_final]


def final_words(hypotheses: list[Hypothesis]) -> list[str]:
    return " ".join(h.text for h in finals(hypotheses)).split()


async def test_streams_interims_then_finals_with_the_documented_request(
    fake: FakeSpeech, channel: grpc.aio.Channel
) -> None:
    script = fake.script("hello world how are you / fine thanks and you")
    hypotheses = await recognize(recognizer_for(channel), script.pcm)

    assert [h.text for h in finals(hypotheses)] == script.sentences
    first_final = hypotheses.index(finals(hypotheses)[0])
    interims = [h for h in hypotheses[:first_final] if not h.is_final]
    assert interims, "interim results come before the first final"
    # The fake answers a stable and an unstable piece; the client concatenates them.
    assert any(h.text == "hello world how" for h in interims)
    assert all(set(h.text.split()) <= set(script.words) for h in interims)
    assert all(h.lang == "en-US" for h in finals(hypotheses))
    # Google's score of each final's top alternative is passed on (files report it).
    assert [h.confidence for h in finals(hypotheses)] == [pytest.approx(0.93)] * 2
    assert all(h.confidence is None for h in interims)
    # Offsets are on the utterance timeline; each final starts where the previous ended.
    assert [(h.start_ms, h.end_ms) for h in finals(hypotheses)] == [
        (0, script.final_end_ms[0]),
        (script.final_end_ms[0], script.final_end_ms[1]),
    ]

    [stream] = fake.streams
    assert stream.status == grpc.StatusCode.OK and stream.half_closed
    request = stream.config_request
    assert request is not None
    assert request.recognizer == "projects/test-project/locations/us-central1/recognizers/_"
    assert not request.audio
    config = request.streaming_config.config
    assert config.model == "chirp_2"
    decoding = config.explicit_decoding_config
    assert decoding.encoding == cloud_speech.ExplicitDecodingConfig.AudioEncoding.LINEAR16
    assert (decoding.sample_rate_hertz, decoding.audio_channel_count) == (16_000, 1)
    assert list(config.language_codes) == ["en-US"]
    assert request.streaming_config.streaming_features.interim_results is True
    assert bytes(stream.audio) == script.pcm
    assert all(0 < size <= MAX_CHUNK_BYTES for size in stream.audio_sizes)
    # 20 ms feeds are coalesced rather than sent one request each.
    assert len(stream.audio_sizes) < len(script.pcm) // FRAME


async def test_large_feeds_are_split_into_small_requests(
    fake: FakeSpeech, channel: grpc.aio.Channel
) -> None:
    script = fake.script("one big feed of audio / split by the client")
    hypotheses = await recognize(recognizer_for(channel), script.pcm, frame=len(script.pcm))

    assert [h.text for h in finals(hypotheses)] == script.sentences
    [stream] = fake.streams
    assert bytes(stream.audio) == script.pcm
    assert max(stream.audio_sizes) == MAX_REQUEST_BYTES <= MAX_CHUNK_BYTES


async def test_auto_detect_sends_the_candidate_languages(
    fake: FakeSpeech, channel: grpc.aio.Channel
) -> None:
    fake.detected_language = "es-es"
    script = fake.script("hola que tal")
    recognizer = recognizer_for(channel, google_languages=["en-US", "es-ES"])
    hypotheses = await recognize(recognizer, script.pcm, language="en-US", auto_detect=True)

    assert list(fake.streams[0].config.config.language_codes) == ["en-US", "es-ES"]
    assert [(h.text, h.lang) for h in finals(hypotheses)] == [("hola que tal", "es-ES")]
    assert recognizer.language_codes("en-US", True) == ["en-US", "es-ES"]
    assert recognizer_for(channel, google_languages=[]).language_codes("fr-FR", True) == ["auto"]
    assert recognizer.language_codes("fr-FR", False) == ["fr-FR"]


async def test_long_utterance_rolls_over_mid_sentence_without_losing_words() -> None:
    # The client rolls over at 4 s of audio per call; the fake would abort at 4.5 s.
    async with FakeSpeech(stream_limit_s=4.5) as fake:
        script = fake.script(SENTENCES, word_ms=170, gap_ms=30, pause_ms=300)
        channel = grpc.aio.insecure_channel(fake.address)
        try:
            recognizer = recognizer_for(channel, google_stream_limit_s=4.0)
            hypotheses = await recognize(recognizer, script.pcm)
        finally:
            await channel.close()

    assert script.duration_ms > 3 * 4000
    assert [h.text for h in finals(hypotheses)] == script.sentences
    # Offsets of later calls are mapped back onto the utterance timeline.
    assert [h.end_ms for h in finals(hypotheses)] == script.final_end_ms
    assert [h.start_ms for h in finals(hypotheses)] == [0, *script.final_end_ms[:-1]]

    assert len(fake.streams) >= 4
    assert all(stream.status != grpc.StatusCode.ABORTED for stream in fake.streams)
    assert all(stream.audio_s <= 4.0 for stream in fake.streams)
    assert fake.streams[-1].status == grpc.StatusCode.OK
    # At least one cut fell inside a word, and that word still came out once.
    assert any(stream.ended_mid_word for stream in fake.streams[:-1])
    # Every byte reached Google, the re-sent tails on top.
    assert sum(len(stream.audio) for stream in fake.streams) > len(script.pcm)
    assert script.pcm.endswith(bytes(fake.streams[-1].audio))


async def test_sentence_longer_than_the_limit_is_flushed_not_resent_forever() -> None:
    # 30 words without a pause (6 s) and no final from Google: re-sending the tail would
    # never fit in a 4 s call, so the call is drained and its audio counts as final.
    async with FakeSpeech(stream_limit_s=4.5) as fake:
        words = " ".join(f"w{i}" for i in range(30))
        script = fake.script(words, lead_ms=0)  # the cut at 4 s falls between words
        channel = grpc.aio.insecure_channel(fake.address)
        try:
            recognizer = recognizer_for(channel, google_stream_limit_s=4.0)
            hypotheses = await recognize(recognizer, script.pcm)
        finally:
            await channel.close()

    assert [(h.text, h.start_ms, h.end_ms) for h in finals(hypotheses)] == [
        (" ".join(f"w{i}" for i in range(20)), 0, 4000),
        (" ".join(f"w{i}" for i in range(20, 30)), 4000, script.final_end_ms[0]),
    ]
    assert [s.status for s in fake.streams] == [grpc.StatusCode.OK, grpc.StatusCode.OK]
    assert fake.streams[0].half_closed and len(fake.streams[0].audio) == 4000 * 32
    assert bytes(fake.streams[0].audio) + bytes(fake.streams[1].audio) == script.pcm


async def test_rollover_also_happens_on_wall_time(
    fake: FakeSpeech, channel: grpc.aio.Channel
) -> None:
    script = fake.script("alpha / bravo / charlie / delta", pause_ms=300)
    recognizer = recognizer_for(channel, google_stream_limit_s=1.0)
    stream = recognizer.open_stream(language="en-US", auto_detect=False)
    hypotheses: list[Hypothesis] = []

    async def consume() -> None:
        async for hypothesis in stream.results():
            hypotheses.append(hypothesis)

    consumer = asyncio.create_task(consume())
    cut = 300 * 32
    await stream.feed(script.pcm[:cut])
    await asyncio.sleep(1.3)  # the pipeline stalls: the call's wall time runs out
    for start in range(cut, len(script.pcm), FRAME):
        await stream.feed(script.pcm[start : start + FRAME])
        await asyncio.sleep(0.002)
    await stream.finish()
    await asyncio.wait_for(consumer, 10)
    await stream.aclose()

    assert [h.text for h in finals(hypotheses)] == script.sentences
    assert len(fake.streams) >= 2
    # The first call got 300 ms of audio in more than a second: wall time ended it.
    assert len(fake.streams[0].audio) == cut
    assert all(s.audio_s <= 1.0 for s in fake.streams)
    assert fake.streams[-1].status == grpc.StatusCode.OK


async def test_unavailable_is_retried_and_resends_unfinalized_audio(
    fake: FakeSpeech, channel: grpc.aio.Channel
) -> None:
    script = fake.script("the quick brown fox / jumps over the lazy dog / and runs away")
    # Call 1 fails after ~1.5 s of audio (mid second sentence), call 2 soon after.
    fake.fail_stream(1, grpc.StatusCode.UNAVAILABLE, after_audio_requests=14)
    fake.fail_stream(2, grpc.StatusCode.UNAVAILABLE, after_audio_requests=3)
    hypotheses = await recognize(recognizer_for(channel), script.pcm)

    assert [h.text for h in finals(hypotheses)] == script.sentences
    assert [h.end_ms for h in finals(hypotheses)] == script.final_end_ms
    assert [s.status for s in fake.streams] == [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.OK,
    ]
    assert fake.streams[0].finals == ["the quick brown fox"]
    # Each new call re-sends from the end of the last final, exactly.
    delivered = 0
    for previous, stream in zip(fake.streams, fake.streams[1:], strict=False):
        delivered += len(previous.finals)
        start = script.pcm.find(bytes(stream.audio))
        assert start == script.final_end_ms[delivered - 1] * 32
    assert script.pcm.endswith(bytes(fake.streams[-1].audio))


async def test_transient_errors_give_up_after_bounded_retries(
    fake: FakeSpeech, channel: grpc.aio.Channel
) -> None:
    script = fake.script("never heard")
    fake.fail_stream(None, grpc.StatusCode.UNAVAILABLE, after_audio_requests=1)
    recognizer = recognizer_for(channel)
    with pytest.raises(RecognizerError) as caught:
        await recognize(recognizer, script.pcm)
    assert caught.value.fatal is False
    assert len(fake.streams) == recognizer.max_retries + 1


async def test_invalid_argument_is_fatal_and_not_retried(
    fake: FakeSpeech, channel: grpc.aio.Channel
) -> None:
    script = fake.script("bad request")
    fake.fail_stream(
        1, grpc.StatusCode.INVALID_ARGUMENT, after_audio_requests=1, message="Invalid audio."
    )
    with pytest.raises(RecognizerError, match="INVALID_ARGUMENT") as caught:
        await recognize(recognizer_for(channel), script.pcm)
    assert caught.value.fatal is True
    assert len(fake.streams) == 1


async def test_unknown_model_is_fatal(fake: FakeSpeech, channel: grpc.aio.Channel) -> None:
    script = fake.script("wrong model")
    recognizer = recognizer_for(channel, google_model="no_such_model")
    stream = recognizer.open_stream(language="en-US", auto_detect=False)
    await stream.feed(script.pcm)
    await stream.finish()
    with pytest.raises(RecognizerError, match="does not exist") as caught:
        async for _ in stream.results():
            pass
    assert caught.value.fatal is True
    # A failed stream refuses more audio with the same error.
    with pytest.raises(RecognizerError):
        await stream.feed(b"\x00\x00")
    await stream.aclose()
    assert len(fake.streams) == 1


async def test_aclose_cancels_a_running_stream(fake: FakeSpeech, channel: grpc.aio.Channel) -> None:
    script = fake.script("interrupted utterance")
    recognizer = recognizer_for(channel)
    stream = recognizer.open_stream(language="en-US", auto_detect=False)
    await stream.feed(script.pcm[: len(script.pcm) // 2])
    for _ in range(100):
        if fake.streams and fake.streams[0].audio:
            break
        await asyncio.sleep(0.01)
    await stream.aclose()
    await stream.aclose()  # idempotent
    assert [h async for h in stream.results()] == []
    with pytest.raises(RecognizerError):
        await stream.feed(b"\x00\x00")
    for _ in range(100):
        if fake.streams[0].cancelled:
            break
        await asyncio.sleep(0.01)
    assert fake.streams[0].cancelled


async def test_empty_utterance_opens_no_call(fake: FakeSpeech, channel: grpc.aio.Channel) -> None:
    hypotheses = await recognize(recognizer_for(channel), b"")
    assert hypotheses == []
    assert fake.streams == []


async def test_insecure_endpoint_override_reaches_an_emulator(fake: FakeSpeech) -> None:
    recognizer = load_recognizer(settings(google_endpoint=f"insecure:{fake.address}"))
    assert isinstance(recognizer, GoogleRecognizer)
    assert recognizer.model == "google/chirp_2"
    await recognizer.start()
    await recognizer.check()
    script = fake.script("through the endpoint setting")
    hypotheses = await recognize(recognizer, script.pcm)
    assert final_words(hypotheses) == script.words

    # Shutdown closes streams still open, then the recognizer's own channel.
    left_open = recognizer.open_stream(language="en-US", auto_detect=False)
    await left_open.feed(script.pcm)
    await recognizer.aclose()
    assert [h async for h in left_open.results()] == []


async def test_the_fake_enforces_google_limits(fake: FakeSpeech, channel: grpc.aio.Channel) -> None:
    """The request-size and duration checks above are only as good as the fake's."""
    client = SpeechAsyncClient(transport=SpeechGrpcAsyncIOTransport(channel=channel))
    first = GoogleRecognizer(settings(), client=client).config_request(["en-US"])

    async def send(*audio: bytes) -> list[Any]:
        async def requests() -> AsyncIterator[cloud_speech.StreamingRecognizeRequest]:
            yield first
            for chunk in audio:
                yield cloud_speech.StreamingRecognizeRequest(audio=chunk)

        call = await client.streaming_recognize(requests=requests())
        return [response async for response in call]

    with pytest.raises(api_exceptions.InvalidArgument, match="maximum of 15360 bytes"):
        await send(b"\x00" * (MAX_CHUNK_BYTES + 2))
    fake.stream_limit_s = 1.0
    with pytest.raises(api_exceptions.Aborted, match="Max duration"):
        await send(*[b"\x00" * 12_800] * 3)


async def test_check_requires_a_project(channel: grpc.aio.Channel) -> None:
    recognizer = GoogleRecognizer.for_channel(settings(google_project=None), channel)
    with pytest.raises(RecognizerError, match="project"):
        await recognizer.check()
    stream = recognizer.open_stream(language="en-US", auto_detect=False)
    with pytest.raises(RecognizerError, match="project") as caught:
        async for _ in stream.results():
            pass
    assert caught.value.fatal is True
    await stream.aclose()


@pytest.fixture
def no_adc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment where ADC finds nothing but what the test puts in place."""
    for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "GOOGLE_CLOUD_QUOTA_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    credentials = tmp_path / "adc.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    return credentials


async def test_check_without_credentials_raises(no_adc: Path) -> None:
    recognizer = GoogleRecognizer(settings())
    with pytest.raises(RecognizerError, match="Application Default Credentials"):
        await recognizer.check()
    # start() only warns: readiness reports the problem instead of a crash.
    await recognizer.start()
    await recognizer.aclose()


@pytest.fixture
def user_adc(no_adc: Path) -> Path:
    """Authorized-user ADC: loads without network and carries no project."""
    no_adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "fake-client-id.apps.example.com",
                "client_secret": "fake-secret",
                "refresh_token": "fake-refresh-token",
            }
        )
    )
    return no_adc


async def test_check_with_credentials_but_no_project_raises(user_adc: Path) -> None:
    with pytest.raises(RecognizerError, match="project"):
        await GoogleRecognizer(settings(google_project=None)).check()

    recognizer = GoogleRecognizer(settings(google_location="europe-west4"))
    await recognizer.check()  # builds the client, no network call
    assert recognizer.recognizer_path.startswith("projects/test-project/locations/europe-west4/")
    await recognizer.aclose()


def test_regional_endpoints() -> None:
    assert default_endpoint("us-central1") == "us-central1-speech.googleapis.com"
    assert default_endpoint("global") == "speech.googleapis.com"


def test_script_helper_is_deterministic() -> None:
    fake = FakeSpeech()
    script: Script = fake.script("a b / c", word_ms=100, gap_ms=50, pause_ms=300, lead_ms=0)
    assert script.sentences == ["a b", "c"]
    assert script.final_end_ms == [250 + 250, 250 + 300 + 100 + 250]


def _word_times(hypotheses: list[Hypothesis]) -> list[tuple[str, int, int]]:
    return [(w.text, w.start_ms, w.end_ms) for h in finals(hypotheses) for w in h.words or ()]


async def test_finals_carry_word_offsets_and_confidences(
    fake: FakeSpeech, channel: grpc.aio.Channel
) -> None:
    """Issue 17: the request asks for word offsets and confidences; each final's words
    come back on the utterance timeline, where the script put them."""
    script = fake.script("hello world how are you / fine thanks and you")
    hypotheses = await recognize(recognizer_for(channel), script.pcm)

    features = fake.streams[0].config.config.features
    assert features.enable_word_time_offsets and features.enable_word_confidence
    expected = [(word, *times) for word, times in zip(script.words, script.word_ms, strict=True)]
    got = _word_times(hypotheses)
    assert [w for w, _, _ in got] == script.words
    # within a millisecond (offsets travel as durations of whole microseconds)
    assert all(
        abs(a[1] - b[1]) <= 1 and abs(a[2] - b[2]) <= 1 for a, b in zip(got, expected, strict=True)
    ), (got, expected)
    for h in finals(hypotheses):
        assert h.words is not None and [w.text for w in h.words] == h.text.split()
        assert all(0 < (w.confidence or 0) <= 1 for w in h.words)
        start, end = h.start_ms or 0, h.end_ms or 0
        assert all(start <= w.start_ms <= w.end_ms <= end for w in h.words)
    assert all(h.words is None for h in hypotheses if not h.is_final)


async def test_word_offsets_of_later_calls_are_mapped_back_after_a_rollover() -> None:
    async with FakeSpeech(stream_limit_s=4.5) as fake:
        script = fake.script(SENTENCES, word_ms=170, gap_ms=30, pause_ms=300)
        channel = grpc.aio.insecure_channel(fake.address)
        try:
            recognizer = recognizer_for(channel, google_stream_limit_s=4.0)
            hypotheses = await recognize(recognizer, script.pcm)
        finally:
            await channel.close()

    assert len(fake.streams) >= 4
    got = _word_times(hypotheses)
    assert [w for w, _, _ in got] == script.words  # each word once, across the cuts
    assert all(
        abs(start - want[0]) <= 1 and abs(end - want[1]) <= 1
        for (_, start, end), want in zip(got, script.word_ms, strict=True)
    )
