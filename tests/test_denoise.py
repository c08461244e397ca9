"""Noise reduction (issue 15): the suppressor seam's contract, what it does to noisy
speech (the fixtures mixed with white and pink noise at 5 and 10 dB SNR, built by
``tests/noisy.py``), and a live session with ``reduceNoise`` end to end."""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Callable
from typing import Any

import noisy
import pytest
from conftest import Running, make_settings, new_session, new_tenant, run_server
from wsclients import producer, stream_pcm

from mcustt.config import Settings
from mcustt.denoise import NoiseSuppressor, WebRtcSuppressor, make_suppressor
from mcustt.types import BYTES_PER_MS

#: every implementation of the seam passes the contract below
IMPLEMENTATIONS: list[Callable[[], NoiseSuppressor]] = [WebRtcSuppressor]


@functools.cache
def mixed(name: str, snr_db: float, kind: str) -> tuple[bytes, bytes]:
    return noisy.mix(name, snr_db, kind)


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda f: getattr(f, "name", "?"))
def make(request: pytest.FixtureRequest) -> Callable[[], NoiseSuppressor]:
    factory: Callable[[], NoiseSuppressor] = request.param
    return factory


# -- the seam's contract -----------------------------------------------------------------


def chunked(s: NoiseSuppressor, pcm: bytes, size: int) -> bytes:
    out = bytearray()
    for i in range(0, len(pcm), size):
        piece = pcm[i : i + size]
        got = s.process(piece)
        assert len(got) == len(piece), (size, i)
        out += got
    return bytes(out)


@pytest.mark.parametrize("size", [1, 2, 7, 318, 320, 640, 1000, 4410, 32_000])
def test_output_has_the_input_length_and_does_not_depend_on_chunking(
    make: Callable[[], NoiseSuppressor], size: int
) -> None:
    _, pcm = mixed("hello_en", 10, "pink")
    pcm = pcm[: 2 * 16_000 * 2 + 3]  # 2 s and a sample and a half: odd ends too
    whole = make()
    reference = whole.process(pcm) + whole.flush()
    s = make()
    out = chunked(s, pcm, size) + s.flush()
    assert len(out) == len(pcm) + s.delay_bytes
    assert out == reference  # the same stream, however it was cut


def test_delay_is_fixed_and_process_all_is_aligned(make: Callable[[], NoiseSuppressor]) -> None:
    clean, pcm = mixed("hello_en", 10, "pink")
    s = make()
    assert 0 < s.delay_bytes <= 20 * BYTES_PER_MS  # at most 20 ms of caption shift
    first = s.process(pcm[:100])
    assert first == bytes(100)  # the delay is silence
    aligned = make().process_all(pcm)
    assert len(aligned) == len(pcm)
    # aligned: the output follows the clean speech sample for sample (correlation)
    a, c = noisy.samples(aligned), noisy.samples(clean)
    spans = noisy.speech_spans(noisy.load("hello_en")[1])
    assert _correlation(a, c, spans) > 0.8
    assert _correlation(a[160:], c, spans) < _correlation(a, c, spans)


def test_flush_starts_a_new_stream(make: Callable[[], NoiseSuppressor]) -> None:
    _, pcm = mixed("hello_en", 10, "white")
    s = make()
    first = s.process_all(pcm[:32_000])
    again = s.process_all(pcm[:32_000])
    assert first == again
    assert s.process(b"") == b"" and s.flush() == bytes(s.delay_bytes)


def test_make_suppressor_gives_a_fresh_one_each_time() -> None:
    a, b = make_suppressor(Settings()), make_suppressor(Settings())
    assert isinstance(a, NoiseSuppressor) and a is not b


# -- what it does to noisy speech --------------------------------------------------------


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("snr", [5, 10])
def test_noise_drops_and_speech_stays(
    make: Callable[[], NoiseSuppressor], kind: str, snr: int
) -> None:
    clean, pcm = mixed("standup_en", snr, kind)
    _, meta = noisy.load("standup_en")
    out = noisy.samples(make().process_all(pcm))
    x, c = noisy.samples(pcm), noisy.samples(clean)
    gaps, speech = noisy.gaps(meta, len(x)), noisy.speech_spans(meta)
    # where nobody speaks: the noise is down by more than 12 dB (measured 16-20 dB)
    drop = noisy.db(noisy.power(x, gaps)) - noisy.db(noisy.power(out, gaps))
    assert drop > 12, drop
    # while speaking: the speech's own level is kept (within 3 dB; measured 0.5-1.1 dB)
    kept = noisy.db(noisy.power(out, speech)) - noisy.db(noisy.power(c, speech))
    assert kept > -3, kept


@pytest.mark.parametrize("kind", ["white", "pink"])
def test_vad_speech_time_comes_back_near_the_clean_recording(
    make: Callable[[], NoiseSuppressor], kind: str
) -> None:
    clean, pcm = mixed("standup_en", 5, kind)
    reference = noisy.vad_speech_s(clean)  # what the VAD hears without noise (26.6 s)
    without = noisy.vad_speech_s(pcm)  # at 5 dB it hears speech everywhere (38 s)
    with_ = noisy.vad_speech_s(make().process_all(pcm))
    assert abs(with_ - reference) < abs(without - reference) / 2, (reference, without, with_)


# -- a live session with reduceNoise -----------------------------------------------------


async def test_live_session_with_reduce_noise_captions_noisy_speech(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = 0
    original = WebRtcSuppressor._frame

    def counting(self: WebRtcSuppressor, frame: bytes) -> bytes:
        nonlocal frames
        frames += 1
        return original(self, frame)

    monkeypatch.setattr(WebRtcSuppressor, "_frame", counting)
    _, pcm = mixed("hello_en", 10, "pink")
    settings = make_settings(sqlite_url, recognizer="sphinx", recognizer_workers=1)
    async with run_server(settings) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"], reduceNoise=True)
        finals = await _caption(srv, s["ingestToken"], pcm)
        words = " ".join(f["text"] for f in finals).lower().split()
        # pocketsphinx's words for noisy synthetic speech vary with its search settings
        # (issue 17 narrowed it: "weekly" became "obliquely"); the sentence is captioned.
        assert len(words) >= 4, finals
        # every 10 ms of the stream went through the suppressor (the last < 10 ms waits
        # in it for more audio)
        assert frames == len(pcm) // 320
        async with srv.client() as c:
            r = await c.get(
                f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": t["apiKey"]}
            )
        assert r.status_code == 200 and r.json()["reduceNoise"] is True

        # a session without it never touches the suppressor
        frames = 0
        plain = await new_session(srv, t["apiKey"])
        await _caption(srv, plain["ingestToken"], pcm[: 16_000 * 2])
        assert frames == 0


async def _caption(srv: Running, token: str, pcm: bytes) -> list[dict[str, Any]]:
    async with producer(f"{srv.ws_url}/ws/stt?token={token}") as (ws, got, task):
        await stream_pcm(ws, pcm, realtime=False)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 60)
    finals: list[dict[str, Any]] = got.finals
    return finals


def _correlation(a: Any, b: Any, spans: list[tuple[int, int]]) -> float:
    sab = saa = sbb = 0.0
    for lo, hi in spans:
        for x, y in zip(a[lo:hi], b[lo:hi], strict=False):
            sab += x * y
            saa += x * x
            sbb += y * y
    return sab / math.sqrt(max(saa * sbb, 1e-9))
