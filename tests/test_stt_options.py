"""Session STT options (issue 15): language hints, contextual keywords, live Opus.

Through the public API: options stored and shown, hints refused by an engine that
cannot serve them (REST 400 and the socket's upgrade), the Google fake receiving the
candidate languages and the keyword phrase set, and ``/ws/stt?encoding=opus`` with raw
packets and with an OGG/Opus stream recognized by pocketsphinx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest
import websockets
from conftest import (
    ADMIN,
    Running,
    make_settings,
    new_session,
    new_tenant,
    read_wav,
    run_server,
)
from fakes.google_speech import FakeSpeech
from media import encode
from wsclients import producer, stream_pcm

from mcustt import wire
from mcustt.errors import UnsupportedLanguage
from mcustt.recognizers.base import language_matches
from mcustt.recognizers.google import GoogleRecognizer
from mcustt.recognizers.sphinx import SphinxRecognizer

#: words pocketsphinx gets right in standup_en (as in test_ingest_speech), and the
#: 15 s of it that holds them (turns 2-4: short, so the test is quick)
ROBUST = {"decided", "migration"}
CLIP = slice(6_000 * 32, 21_000 * 32)


def opus_packets(pcm: bytes, *, rate: int = 48_000) -> list[bytes]:
    """Raw Opus packets (20 ms each) of 16 kHz mono PCM16, encoded with PyAV's libopus."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = rate
    codec.layout = "mono"
    codec.format = av.AudioFormat("s16")
    codec.bit_rate = 32_000
    codec.open()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    packets: list[bytes] = []
    for i in range(0, len(pcm), 640):
        chunk = pcm[i : i + 640]
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(chunk) // 2)
        frame.sample_rate = 16_000
        frame.planes[0].update(chunk)
        frame.pts = i // 2
        for f in resampler.resample(frame):
            packets += [bytes(p) for p in codec.encode(f)]
    packets += [bytes(p) for p in codec.encode(None)]
    return packets


@pytest.fixture
async def sphinx_server(sqlite_url: str) -> AsyncIterator[Running]:
    settings = make_settings(sqlite_url, recognizer="sphinx", recognizer_workers=1)
    async with run_server(settings) as srv:
        yield srv


# -- options on tenants and sessions ------------------------------------------------


async def test_session_options_stored_and_shown(server: Running) -> None:
    t = await new_tenant(server, keywords=["Acme", "acme", " roadmap  review "])
    assert t["keywords"] == ["Acme", "roadmap review"]  # trimmed, deduped
    admin = {"authorization": f"Bearer {ADMIN}"}
    async with server.client() as c:
        r = await c.patch(
            f"/api/admin/tenants/{t['tenantId']}", json={"keywords": ["Kubernetes"]}, headers=admin
        )
        assert r.status_code == 200, r.text
        assert r.json()["keywords"] == ["Kubernetes"]
    s = await new_session(
        server,
        t["apiKey"],
        languageHints="ko, EN-us,ko,fr,de",  # extras past three dropped, case canonical
        keywords=["mcustt", "WebRTC"],
        reduceNoise=True,
    )
    key = {"x-tenant-key": t["apiKey"]}
    async with server.client() as c:
        doc = (await c.get(f"/api/sessions/{s['sessionId']}", headers=key)).json()
        assert doc["languageHints"] == ["ko", "en-US", "fr"]
        assert doc["keywords"] == ["mcustt", "WebRTC"]
        assert doc["reduceNoise"] is True
        assert doc["sourceLang"] == "ko"  # the first hint, without a sourceLang
        # the legacy single hint, and the defaults
        legacy = await c.post("/api/sessions", json={"language_hint": "es"}, headers=key)
        plain = await c.post("/api/sessions", json={}, headers=key)
        for created, hints in ((legacy, ["es"]), (plain, [])):
            sid = created.json()["sessionId"]
            got = (await c.get(f"/api/sessions/{sid}", headers=key)).json()
            assert (got["languageHints"], got["keywords"], got["reduceNoise"]) == (
                hints,
                [],
                False,
            )
        # bad input is a clear 400
        for body in (
            {"languageHints": "en,k!"},
            {"languageHints": [1]},
            {"keywords": ["x"] * 101},
            {"keywords": ["x" * 101]},
        ):
            r = await c.post("/api/sessions", json=body, headers=key)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["code"] == "BAD_REQUEST"


def test_parse_language_hints() -> None:
    assert wire.parse_language_hints("ko,en") == ["ko", "en"]
    assert wire.parse_language_hints(["zh-hant-tw", "", "ZH-Hant-TW"]) == ["zh-Hant-TW"]
    assert wire.parse_language_hints(None) == []
    with pytest.raises(ValueError):
        wire.parse_language_hints("english please")
    merged = wire.merge_keywords(["B", "a"], ["A", "c"], ["x"] * 3)
    assert merged == ["B", "a", "c", "x"]
    assert len(wire.merge_keywords([f"k{i}" for i in range(150)])) == wire.MAX_KEYWORDS


def test_language_matching() -> None:
    assert language_matches("en", "en-US") and language_matches("en-GB", "en")
    assert not language_matches("en-GB", "en-US") and not language_matches("ko", "en")
    sphinx = SphinxRecognizer(make_settings("sqlite://", recognizer="sphinx"))
    sphinx.check_languages(["en", "en-GB"])
    with pytest.raises(UnsupportedLanguage, match="supports en"):
        sphinx.check_languages(["en", "ko"])
    GoogleRecognizer(make_settings("sqlite://")).check_languages(["ko", "ja", "en"])


# -- hints an engine cannot serve ------------------------------------------------------


async def test_sphinx_refuses_hints_it_cannot_serve(sphinx_server: Running) -> None:
    srv = sphinx_server
    t = await new_tenant(srv)
    key = {"x-tenant-key": t["apiKey"]}
    async with srv.client() as c:
        r = await c.post("/api/sessions", json={"languageHints": ["en", "ko"]}, headers=key)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == "UNSUPPORTED_LANGUAGE"
        assert "ko" in error["message"] and "supports en" in error["message"]
        r = await c.post("/api/sessions", json={"languageHints": "en-GB,en"}, headers=key)
        assert r.status_code == 201, r.text
    # on the socket: refused at the upgrade (HTTP 400), the token stays usable
    s = await new_session(srv, t["apiKey"])
    url = f"{srv.ws_url}/ws/stt?token={s['ingestToken']}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url + "&language_hints=ko,en")
    assert refused.value.response.status_code == 400
    assert b"UNSUPPORTED_LANGUAGE" in refused.value.response.body
    # the zero-ceremony socket too
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{srv.ws_url}/ws/stt?language_hint=fr", additional_headers=key)
    assert refused.value.response.status_code == 400
    async with producer(url + "&language_hints=en") as (ws, got, task):
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 30)
    assert got.types()[0] == "ready" and got.close_code == 1000


# -- Google: candidate languages and the keyword phrase set ------------------------------


async def test_google_receives_language_codes_and_keywords(sqlite_url: str) -> None:
    async with FakeSpeech() as fake:
        settings = make_settings(
            sqlite_url,
            recognizer="google",
            google_project="test-project",
            google_endpoint=f"insecure:{fake.address}",
        )
        async with run_server(settings) as srv:
            t = await new_tenant(srv, keywords=["Acme", "mcustt"])
            s = await new_session(
                srv, t["apiKey"], languageHints="ko,en-US", keywords=["Kubernetes", "MCUSTT"]
            )
            script = fake.script("alpha bravo / charlie")
            url = f"{srv.ws_url}/ws/stt?token={s['ingestToken']}"
            async with producer(url) as (ws, got, task):
                await stream_pcm(ws, script.pcm + bytes(32_000), realtime=False)
                await ws.send(json.dumps({"type": "stop"}))
                await asyncio.wait_for(task, 30)
    assert [f["text"] for f in got.finals], got.messages
    config = fake.streams[0].config.config
    assert list(config.language_codes) == ["ko", "en-US"]
    (phrase_set,) = config.adaptation.phrase_sets
    phrases = phrase_set.inline_phrase_set.phrases
    # the session's first, then the tenant's, case-insensitive duplicates dropped
    assert [p.value for p in phrases] == ["Kubernetes", "MCUSTT", "Acme"]
    assert all(p.boost == pytest.approx(10.0) for p in phrases)


# -- live Opus ---------------------------------------------------------------------------


async def _recognized(srv: Running, query: str, frames: list[bytes], *, audio_ms: int) -> list[str]:
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"])
    async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}&{query}") as (
        ws,
        got,
        task,
    ):
        for frame in frames:
            await ws.send(frame)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 120)
    assert got.close_code == 1000, got.messages
    state = await srv.stored_session(s["sessionId"])
    assert abs(state.audio_ms - audio_ms) < 200  # decoded to 16 kHz: the clip's length
    return [f["text"] for f in got.finals]


async def test_live_opus_ogg_stream(sphinx_server: Running, tmp_path: Path) -> None:
    clip = read_wav("standup_en.wav")[CLIP]
    with wave.open(str(tmp_path / "clip.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(clip)
    # a stereo OGG/Opus file at 48 kHz, sent in 4 KB pieces cut across pages
    ogg = encode(tmp_path / "clip.wav", tmp_path / "clip.ogg", "libopus", 48_000)
    data = ogg.read_bytes()
    chunks = [data[i : i + 4000] for i in range(0, len(data), 4000)]
    finals = await _recognized(
        sphinx_server, "encoding=opus&sample_rate=auto", chunks, audio_ms=len(clip) // 32
    )
    assert set(re.findall(r"[\w']+", " ".join(finals).lower())) >= ROBUST, finals


async def test_live_opus_raw_packets(sphinx_server: Running) -> None:
    clip = read_wav("standup_en.wav")[CLIP]
    finals = await _recognized(
        sphinx_server,
        "encoding=opus&sample_rate=48000&channels=1",
        opus_packets(clip),
        audio_ms=len(clip) // 32,
    )
    assert set(re.findall(r"[\w']+", " ".join(finals).lower())) >= ROBUST, finals


async def test_bad_opus_and_unchanged_pcm(sqlite_server: Running) -> None:
    srv = sqlite_server
    t = await new_tenant(srv)
    # random bytes are not Opus: a few are skipped, then the socket says so and closes
    s = await new_session(srv, t["apiKey"])
    url = f"{srv.ws_url}/ws/stt?token={s['ingestToken']}&encoding=opus"
    async with producer(url) as (ws, got, task):
        for _ in range(200):
            try:
                await ws.send(os.urandom(320))
            except websockets.ConnectionClosed:
                break
        await asyncio.wait_for(task, 30)
    assert got.close_code == 1003
    errors = [m for m in got.messages if m["type"] == "error"]
    assert errors and errors[-1]["code"] == "INVALID_AUDIO_FORMAT"
    # an Ogg stream that is not Opus inside is refused at once
    s = await new_session(srv, t["apiKey"])
    url = f"{srv.ws_url}/ws/stt?token={s['ingestToken']}&encoding=opus"
    page = b"OggS\x00\x02" + bytes(20) + b"\x01\x08" + b"OpusXXXX"
    async with producer(url) as (ws, got, task):
        await ws.send(page)
        await asyncio.wait_for(task, 30)
    assert got.close_code == 1003
    # unknown encodings and rates are refused at the upgrade
    for query in ("encoding=mp3", "encoding=opus&sample_rate=44100", "encoding=opus&channels=3"):
        s = await new_session(srv, t["apiKey"])
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}&{query}")
        assert refused.value.response.status_code == 400
    # PCM stays the default, with the contract's frame checks
    s = await new_session(srv, t["apiKey"])
    async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
        await ws.send(bytes(640))
        await ws.send(b"\x00" * 641)
        await asyncio.wait_for(task, 30)
    assert got.close_code == 1003
    assert got.messages[-1]["code"] == "INVALID_AUDIO_FORMAT"


# -- reduceNoise: the suppressor in front of VAD ------------------------------------------


class _CountingSuppressor:
    """Stands in for NOISE's suppressor: counts what it is given, returns it unchanged."""

    seen: list[int]

    def __init__(self, seen: list[int], *, fail: bool = False) -> None:
        self.seen = seen
        self.fail = fail

    def process(self, pcm16_16k: bytes) -> bytes:
        if self.fail:
            raise RuntimeError("the suppressor broke")
        self.seen.append(len(pcm16_16k))
        return pcm16_16k


async def test_reduce_noise_runs_the_suppressor_in_front_of_vad(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mcustt.state  # here: patched before the server builds its pipelines

    seen: list[int] = []
    fail = {"on": False}
    monkeypatch.setattr(
        mcustt.state,
        "suppressor_factory",
        lambda settings: lambda: _CountingSuppressor(seen, fail=fail["on"]),
    )
    async with run_server(make_settings(sqlite_url)) as srv:
        t = await new_tenant(srv)
        pcm = bytes(32_000)  # 1 s
        for reduce in (False, True):
            s = await new_session(srv, t["apiKey"], reduceNoise=reduce)
            url = f"{srv.ws_url}/ws/stt?token={s['ingestToken']}"
            async with producer(url) as (ws, got, task):
                await stream_pcm(ws, pcm, realtime=False)
                await ws.send(json.dumps({"type": "stop"}))
                await asyncio.wait_for(task, 30)
            assert got.close_code == 1000
            assert sum(seen) == (len(pcm) if reduce else 0)
            state = await srv.stored_session(s["sessionId"])
            assert state.audio_ms == 1000  # every byte went on to VAD, tail included
        # a suppressor that fails ends the stream with an error, not unsuppressed audio
        fail["on"] = True
        s = await new_session(srv, t["apiKey"], reduceNoise=True)
        async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
            with contextlib.suppress(websockets.ConnectionClosed):
                await stream_pcm(ws, pcm, realtime=False)
            await asyncio.wait_for(task, 30)
        assert got.close_code == 1011
        assert got.messages[-1]["code"] == "RECOGNIZER_FAILED"


async def test_reduce_noise_live_with_the_real_suppressor(sphinx_server: Running) -> None:
    srv = sphinx_server
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"], reduceNoise=True)
    clip = read_wav("standup_en.wav")[CLIP]
    async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
        await stream_pcm(ws, clip, realtime=False)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 120)
    # The real suppressor is in the path: speech still comes through as captions (its
    # effect on accuracy is measured in NOISE's note; sphinx on this clean clip loses a
    # word or two to it), and every byte was counted as session audio.
    words = " ".join(f["text"] for f in got.finals).split()
    assert len(words) >= 10 and got.close_code == 1000, got.messages
    state = await srv.stored_session(s["sessionId"])
    assert abs(state.audio_ms - len(clip) // 32) < 200
