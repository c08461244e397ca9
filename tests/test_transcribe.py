"""File transcription (issue 15): ``POST /api/transcribe`` through the public API, on
SQLite and PostgreSQL: uploads in several formats, ``audio_url`` and its refusals, long
files as jobs with Idempotency-Key, the file's session and its export, bad inputs."""

from __future__ import annotations

import array
import asyncio
import contextlib
import io
import uuid
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from conftest import FIXTURES, Running, free_port, make_settings, run_server
from media import encode
from rest_helpers import client, create_tenant, error_of, wait_job
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from mcustt import netguard
from mcustt import transcribe as transcribe_mod
from mcustt.netguard import CheckedUrl

HELLO = (FIXTURES / "hello_en.wav").read_bytes()


def wav(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return out.getvalue()


def stereo(left: bytes, right: bytes) -> bytes:
    """A two-channel 16 kHz WAV of two mono PCM16 tracks."""
    a, b = array.array("h", left), array.array("h", right)
    both = array.array("h", bytes(len(left) * 2))
    both[0::2], both[1::2] = a, b
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(both.tobytes())
    return out.getvalue()


def files(data: bytes, name: str = "hello_en.wav") -> dict[str, Any]:
    return {"file": (name, data, "application/octet-stream")}


# -- a local media server for audio_url ------------------------------------------------------


async def _hello(request: Request) -> Response:
    return Response(wav(HELLO[44 : 44 + 2 * 32000]), media_type="audio/wav")  # 2 s: inline


async def _big(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(100):  # 6.4 MB, undeclared: the cap is counted while it streams
            yield bytes(64_000)

    return StreamingResponse(body(), media_type="audio/wav")


async def _slow(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield HELLO[:1000]
        await asyncio.sleep(30)
        yield HELLO[1000:]

    return StreamingResponse(body(), media_type="audio/wav")


async def _redirect(request: Request) -> Response:
    return RedirectResponse(f"{request.base_url}hello.wav", status_code=302)


@contextlib.asynccontextmanager
async def media_server() -> AsyncIterator[str]:
    app = Starlette(
        routes=[
            Route("/hello.wav", _hello),
            Route("/big.wav", _big),
            Route("/slow.wav", _slow),
            Route("/redirect", _redirect),
        ]
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


# -- uploads with the real recognizer ----------------------------------------------------------


@pytest.fixture
async def sphinx_server(db_url: str) -> AsyncIterator[Running]:
    settings = make_settings(db_url, recognizer="sphinx", recognizer_workers=1)
    async with run_server(settings) as running:
        yield running


async def test_upload_formats_and_the_files_session(sphinx_server: Running, tmp_path: Path) -> None:
    async with client(sphinx_server) as c:
        key = (await create_tenant(c))["apiKey"]
        h = {"x-tenant-key": key}
        r = await c.post(
            "/api/transcribe",
            files=files(HELLO),
            data={"title": "Planning", "language_hints": "en"},
            headers=h,
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        assert "weekly" in doc["text"].split(), doc
        assert doc["detected_language"] == "en-US"
        assert 4500 <= doc["duration_ms"] <= 5200
        utts = doc["utterances"]
        assert utts and all(u["speaker"] == "0" and u["language"] == "en-US" for u in utts)
        assert all(0 <= u["start_ms"] < u["end_ms"] <= doc["duration_ms"] + 100 for u in utts)
        assert utts[0]["start_ms"] < 1000  # the speech starts at 0.5 s
        assert doc["diarization"]["status"] in ("done", "unavailable")
        if doc["diarization"]["status"] == "unavailable":
            assert "mcustt[diarization]" in doc["diarization"]["reason"]

        # The file is a session like any other: ended, its transcript exports.
        sid = doc["sessionId"]
        state = (await c.get(f"/api/sessions/{sid}", headers=h)).json()
        assert state["status"] == "ended" and state["endReason"] == "file"
        assert state["title"] == "Planning" and state["lineCount"] == len(utts)
        srt = await c.get(f"/api/sessions/{sid}/transcript?format=srt", headers=h)
        assert srt.status_code == 200 and "weekly" in srt.text
        lines = (await c.get(f"/api/sessions/{sid}/transcript", headers=h)).json()
        assert "weekly" in " ".join(line["text"] for line in lines["lines"])
        # issue 17: a file's lines carry their word timings too, inside each line
        for line in lines["lines"]:
            assert [w["text"] for w in line["words"]] == line["text"].split()
            assert all(
                line["startMs"] <= w["startMs"] <= w["endMs"] <= line["endMs"]
                for w in line["words"]
            )
        # Speaker ids are stored on the lines (issue 14's exports name them).
        stored = await sphinx_server.state.repo.lines(sid)
        assert [row.speaker for row in stored] == [u["speaker"] for u in utts]
        # Its summary is queued like any ended session's; its embed page opens.
        for _ in range(200):
            summary = await c.get(f"/api/sessions/{sid}/summary", headers=h)
            if summary.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert summary.status_code == 200 and summary.json()["status"] == "ready", summary.text
        embed = (await c.post(f"/api/sessions/{sid}/embed-token", headers=h)).json()
        page = await c.get(embed["embedUrl"].split("#", 1)[0])
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]

        # A two-channel recording with one speaker per channel: the channels tell the
        # speakers apart (no model needed), and each utterance gets its channel's speaker.
        pcm = HELLO[44:]
        silence = bytes(len(pcm))
        r = await c.post(
            "/api/transcribe",
            files=files(stereo(pcm + silence, silence + pcm), "two.wav"),
            data={"language_hints": "en"},
            headers=h,
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["diarization"]["status"] == "done", doc["diarization"]
        speakers = [u["speaker"] for u in doc["utterances"] if "weekly" in u["text"].split()]
        assert speakers == ["0", "1"], doc["utterances"]

        # A hint the recognizer cannot serve: 400 naming what it supports.
        r = await c.post(
            "/api/transcribe", files=files(HELLO), data={"language_hints": "ko,ja"}, headers=h
        )
        err = error_of(r, 400, "UNSUPPORTED_LANGUAGE")
        assert "en" in err["message"]


# -- refusals, audio_url and jobs (no speech needed: the null recognizer) ------------------------


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Running]:
    settings = make_settings(
        db_url,
        allow_private_urls=True,
        transcribe_max_bytes=1_000_000,
        transcribe_fetch_timeout_s=2.0,
        transcribe_inline_s=3.0,
    )
    async with run_server(settings) as running:
        yield running


async def test_formats(server: Running, tmp_path: Path) -> None:
    """Compressed formats decode (resampled from 44.1 kHz stereo mp3, 48 kHz OGG/Opus and
    flac) to the right length, off the event loop."""
    src = tmp_path / "short.wav"
    src.write_bytes(wav(HELLO[44 : 44 + 2 * 32000]))
    async with client(server) as c:
        h = {"x-tenant-key": (await create_tenant(c))["apiKey"]}
        for codec, rate, ext, layout in (
            ("mp3", 44100, "mp3", "stereo"),
            ("libopus", 48000, "ogg", "stereo"),
            ("flac", 48000, "flac", "mono"),
        ):
            path = encode(src, tmp_path / f"short.{ext}", codec, rate, layout)
            r = await c.post(
                "/api/transcribe",
                files=files(path.read_bytes(), f"short.{ext}"),
                data={"enable_diarization": "false"},
                headers=h,
            )
            assert r.status_code == 200, (ext, r.text)
            doc = r.json()
            assert 1900 <= doc["duration_ms"] <= 2150, (ext, doc)
            assert doc["diarization"] == {"status": "disabled"}
        # Noise suppression runs on the decoded audio (same length out).
        r = await c.post(
            "/api/transcribe",
            files=files(src.read_bytes(), "short.wav"),
            data={"reduce_noise": "true"},
            headers=h,
        )
        assert r.status_code == 200, r.text
        assert 1900 <= r.json()["duration_ms"] <= 2150
        state = (await c.get(f"/api/sessions/{r.json()['sessionId']}", headers=h)).json()
        assert state["status"] == "ended"
        stored = await server.stored_session(r.json()["sessionId"])
        assert stored.reduce_noise is True


async def test_bad_inputs(server: Running) -> None:
    async with client(server) as c:
        h = {"x-tenant-key": (await create_tenant(c))["apiKey"]}
        assert (await c.post("/api/transcribe", files=files(HELLO))).status_code == 401
        error_of(await c.post("/api/transcribe", files=files(b""), headers=h), 400)
        error_of(
            await c.post("/api/transcribe", files=files(b"not audio at all " * 200), headers=h),
            400,
            "INVALID_AUDIO_FORMAT",
        )
        error_of(
            await c.post("/api/transcribe", files=files(b"#EXTM3U\nhttp://x/a.ts\n"), headers=h),
            400,
            "INVALID_AUDIO_FORMAT",
        )
        garbage = {**h, "content-type": "multipart/form-data; boundary=xyz"}
        error_of(
            await c.post("/api/transcribe", content=b"--abc\r\n\r\njunk", headers=garbage), 400
        )
        error_of(await c.post("/api/transcribe", data={"title": "no file"}, headers=h), 400)
        error_of(await c.post("/api/transcribe", json={}, headers=h), 400)
        error_of(await c.post("/api/transcribe", json={"audio_url": 5}, headers=h), 400)
        error_of(
            await c.post(
                "/api/transcribe", files=files(HELLO), data={"reduce_noise": "maybe"}, headers=h
            ),
            400,
        )
        error_of(
            await c.post(
                "/api/transcribe", content=b"x", headers={**h, "content-type": "text/plain"}
            ),
            415,
        )
        # Larger than the file cap: refused while it is read.
        big = files(bytes(2_100_000))
        error_of(await c.post("/api/transcribe", files=big, headers=h), 413)


async def test_audio_url(server: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    async with media_server() as media, client(server) as c:
        h = {"x-tenant-key": (await create_tenant(c))["apiKey"]}
        r = await c.post("/api/transcribe", json={"audio_url": f"{media}/hello.wav"}, headers=h)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert 1900 <= doc["duration_ms"] <= 2100
        state = (await c.get(f"/api/sessions/{doc['sessionId']}", headers=h)).json()
        assert state["title"] == "hello.wav" and state["endReason"] == "file"
        # A redirect is followed (and checked again).
        r = await c.post("/api/transcribe", json={"audio_url": f"{media}/redirect"}, headers=h)
        assert r.status_code == 200, r.text

        for url, code in (
            ("ftp://example.com/a.wav", "URL_NOT_ALLOWED"),
            ("file:///etc/passwd", "URL_NOT_ALLOWED"),
            (f"{media}/big.wav", "AUDIO_FETCH_FAILED"),
            (f"{media}/slow.wav", "AUDIO_FETCH_FAILED"),
            (f"{media}/missing.wav", "AUDIO_FETCH_FAILED"),
        ):
            err = error_of(
                await c.post("/api/transcribe", json={"audio_url": url}, headers=h), 400, code
            )
            assert err["message"]

        # Private addresses refused unless allowed: the first hop passes (as if it were
        # public), the redirect to 127.0.0.1 does not.
        real = netguard.check_url

        async def guard(url: str, *, allow_private: bool) -> CheckedUrl:
            if url.endswith("/redirect"):
                return await real(url, allow_private=True)
            return await real(url, allow_private=False)

        monkeypatch.setattr(transcribe_mod, "check_url", guard)
        err = error_of(
            await c.post("/api/transcribe", json={"audio_url": f"{media}/redirect"}, headers=h),
            400,
            "URL_NOT_ALLOWED",
        )
        assert "loopback" in err["message"] and "MCUSTT_ALLOW_PRIVATE_URLS" in err["message"]


async def test_long_file_is_a_job_with_idempotency(server: Running) -> None:
    async with client(server) as c:
        h = {"x-tenant-key": (await create_tenant(c))["apiKey"]}
        # 4.9 s of audio > transcribe_inline_s (3 s): a job.
        r = await c.post("/api/transcribe", files=files(HELLO), headers=h)
        assert r.status_code == 202, r.text
        done = await wait_job(c, r.json()["jobId"], h["x-tenant-key"])
        assert done["status"] == "ready" and done["kind"] == "transcription", done
        result = done["result"]
        assert 4500 <= result["duration_ms"] <= 5200
        state = (await c.get(f"/api/sessions/{result['sessionId']}", headers=h)).json()
        assert state["status"] == "ended" and state["endReason"] == "file"

        key = {**h, "idempotency-key": "file-" + uuid.uuid4().hex}
        first = await c.post("/api/transcribe", files=files(HELLO), headers=key)
        assert first.status_code == 202, first.text
        again = await c.post("/api/transcribe", files=files(HELLO), headers=key)
        assert again.status_code == 202 and again.json()["jobId"] == first.json()["jobId"]
        other = await c.post(
            "/api/transcribe", files=files(HELLO), data={"title": "other"}, headers=key
        )
        error_of(other, 422, "IDEMPOTENCY_KEY_REUSED")
        done = await wait_job(c, first.json()["jobId"], h["x-tenant-key"])
        assert done["status"] == "ready", done
        # Another tenant cannot see the job.
        h2 = {"x-tenant-key": (await create_tenant(c))["apiKey"]}
        error_of(await c.get(f"/api/jobs/{first.json()['jobId']}", headers=h2), 404)

        # A short keyed file runs at once; the retry gets the same answer.
        short = wav(HELLO[44 : 44 + 2 * 16000 * 2])  # 2 s
        key2 = {**h, "idempotency-key": "short-" + uuid.uuid4().hex}
        a = await c.post("/api/transcribe", files=files(short), headers=key2)
        assert a.status_code == 200, a.text
        b = await c.post("/api/transcribe", files=files(short), headers=key2)
        assert b.status_code == 200 and b.json()["sessionId"] == a.json()["sessionId"]
