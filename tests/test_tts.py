"""Text to speech through the public API (issue 16), on SQLite and PostgreSQL: POST
/api/tts, the signed URL, the seed-000 /v1/tts, and both engines (espeak-ng for real,
openai against the local fake)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import Running, make_settings, need_service, new_tenant, run_server
from fakes.openai_server import FakeOpenAI, Reply, running_fake_openai, speech_audio
from rest_helpers import error_of
from test_logs import capture, records

from mcustt.config import Settings
from mcustt.retention import Retention
from mcustt.testing.tts import decode_ogg_opus
from mcustt.tts.espeak import EspeakSynthesizer

SENTENCE = "Welcome to the weekly billing review. The page ships on Friday."


class MissingEspeak(EspeakSynthesizer):
    """The embedded engine on a machine without espeak-ng (``MCUSTT_TTS=test_tts:…``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, program="/nonexistent/espeak-ng")


@pytest.fixture(autouse=True)
def _espeak() -> None:
    if shutil.which("espeak-ng") is None:
        need_service("espeak-ng", "scripts/install installs the Debian package")


def key_headers(key: str) -> dict[str, str]:
    return {"x-tenant-key": key}


async def speak(c: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    body.setdefault("text", SENTENCE)
    return await c.post("/api/tts", json=body, headers=key_headers(key))


def tampered(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    query = {k: v for k, v in query.items() if v != "-"}
    return parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()


async def test_speech_is_stored_and_served_at_a_signed_url(server: Running) -> None:
    tenant = await new_tenant(server)
    other = await new_tenant(server)
    async with server.client() as c:
        r = await speak(c, tenant["apiKey"], voice="en-US", format="ogg_opus")
        assert r.status_code == 201, r.text
        doc = r.json()
        assert set(doc) == {"id", "audioUrl", "expiresAt", "voice", "format", "bytes", "createdAt"}
        assert doc["format"] == "ogg_opus" and doc["voice"] == "en-us"
        assert r.headers["location"] == f"/api/tts/{doc['id']}"
        # Seven days by default.
        assert doc["expiresAt"] == pytest.approx(time.time() + 7 * 86400, abs=60)
        url = doc["audioUrl"]
        assert url.startswith(f"{server.url}/media/tts/{doc['id']}.ogg?exp=")

    # A capability: no credential at all, from a fresh client.
    async with httpx.AsyncClient(timeout=30) as anonymous:
        audio = await anonymous.get(url)
        assert audio.status_code == 200, audio.text
        assert audio.headers["content-type"] == "audio/ogg"
        assert "max-age=" in audio.headers["cache-control"]
        assert "private" in audio.headers["cache-control"]
        assert len(audio.content) == doc["bytes"]
        decoded = decode_ogg_opus(audio.content)
        assert decoded.codec == "opus"
        # Eleven words of speech: a few seconds, and not silence.
        assert 2.0 < decoded.seconds < 12.0, decoded
        assert decoded.rms > 0.01, decoded

        # Anything changed in the URL: 403, never the file.
        sig = parse_qs(urlsplit(url).query)["sig"][0]
        exp = parse_qs(urlsplit(url).query)["exp"][0]
        flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
        for bad in (
            tampered(url, sig=flipped),
            tampered(url, exp=str(int(exp) + 86400)),  # a longer life
            tampered(url, sig="-"),
            tampered(url, exp="-"),
            tampered(url, exp="soon"),
            url.replace(doc["id"], "tts_" + "A" * 16),  # another id, same signature
        ):
            error_of(await anonymous.get(bad), 403, "SIGNED_URL_INVALID")
        error_of(await anonymous.get(f"{server.url}/media/tts/nope.ogg?exp=1&sig=x"), 404)

    async with server.client() as c:
        # The owner gets it again (with the tenant key in either header); another tenant
        # cannot tell it exists.
        again = await c.get(f"/api/tts/{doc['id']}", headers=key_headers(tenant["apiKey"]))
        assert again.status_code == 200 and again.json() == doc
        bearer = {"authorization": f"Bearer {tenant['apiKey']}"}
        assert (await c.get(f"/api/tts/{doc['id']}", headers=bearer)).json() == doc
        error_of(
            await c.get(f"/api/tts/{doc['id']}", headers=key_headers(other["apiKey"])),
            404,
            "TTS_AUDIO_NOT_FOUND",
        )
        error_of(await c.get(f"/api/tts/{doc['id']}"), 401)
        # "opus" is the same format; the default voice is espeak's "en".
        r = await c.post("/api/tts", json={"text": "Hello.", "format": "opus"}, headers=bearer)
        assert r.status_code == 201 and r.json()["voice"] == "en", r.text


async def test_requests_are_checked_and_rate_limited(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, tts_max_chars=300)
    async with run_server(settings) as srv, srv.client() as c:
        tenant = await new_tenant(srv)
        key = tenant["apiKey"]
        voices = await c.get("/api/tts/voices", headers=key_headers(key))
        assert voices.status_code == 200
        assert voices.json()["engine"] == "espeak" and voices.json()["defaultVoice"] == "en"
        assert {"en", "en-us", "de", "fr-fr", "es"} <= set(voices.json()["voices"])
        error_of(await c.post("/api/tts", json={"text": "hi"}), 401, "MISSING_TENANT_KEY")
        for body in (
            {"text": "   \n "},
            {"text": ""},
            {},
            {"text": "x" * 301},  # over MCUSTT_TTS_MAX_CHARS
            {"text": "hi", "format": "mp3"},
            {"text": 5},
            {"text": "hi", "voice": "../../etc/passwd"},
        ):
            error_of(
                await c.post("/api/tts", json=body, headers=key_headers(key)), 400, "BAD_REQUEST"
            )
        unknown = await speak(c, key, voice="klingon")
        assert "en-us" in error_of(unknown, 400, "UNKNOWN_VOICE")["message"]

    # The budget is per tenant (and counted before the body is read, like summarize's).
    settings = make_settings(sqlite_url, rate_tts="2/minute")
    async with run_server(settings) as srv, srv.client() as c:
        first, second = await new_tenant(srv), await new_tenant(srv)
        for _ in range(2):
            assert (await speak(c, first["apiKey"], text="One.")).status_code == 201
        limited = await speak(c, first["apiKey"], text="Two.")
        error_of(limited, 429, "RATE_LIMITED")
        assert int(limited.headers["retry-after"]) >= 1
        assert (await speak(c, second["apiKey"], text="Three.")).status_code == 201


async def test_signed_urls_and_audio_expire(db_url: str) -> None:
    settings = make_settings(db_url, tts_url_ttl_s=1)
    async with run_server(settings) as srv:
        tenant = await new_tenant(srv)
        async with srv.client() as c:
            doc = (await speak(c, tenant["apiKey"], text="Short lived.")).json()
            exp = int(parse_qs(urlsplit(doc["audioUrl"]).query)["exp"][0])
            assert exp == doc["expiresAt"]
            while time.time() <= exp:
                await asyncio.sleep(0.05)
            error_of(await c.get(doc["audioUrl"]), 410, "SIGNED_URL_EXPIRED")
            error_of(
                await c.get(f"/api/tts/{doc['id']}", headers=key_headers(tenant["apiKey"])),
                404,
                "TTS_AUDIO_NOT_FOUND",
            )
            # The retention pass deletes the file; its URL stays expired (not 404).
            retention = Retention(
                srv.state.repo,
                srv.state.pipelines.end_session,
                retention_days=30,
                abandon_after_s=3600,
                interval_s=3600,
            )
            assert await retention.prune_tts_audio() >= 1
            assert await srv.state.repo.get_tts_audio(doc["id"]) is None
            error_of(await c.get(doc["audioUrl"]), 410, "SIGNED_URL_EXPIRED")


async def test_v1_tts_is_seed_000s(server: Running) -> None:
    tenant = await new_tenant(server)
    key = tenant["apiKey"]
    body = {"session_id": "meeting-42", "message_id": "msg-7", "text": SENTENCE}
    async with server.client() as c:
        r = await c.post(f"/v1/tts?api_key={key}", json=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert set(doc) == {"audio_url", "error"} and doc["error"] == ""
        audio = await httpx.AsyncClient(timeout=30).get(doc["audio_url"])
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/ogg"
        assert decode_ogg_opus(audio.content).rms > 0.01

        async def v1(status: int, error: str, **kwargs: Any) -> None:
            kwargs.setdefault("params", {"api_key": key})
            answer = await c.post("/v1/tts", **kwargs)
            assert answer.status_code == status, answer.text
            got = answer.json()
            assert got["audio_url"] == "", got
            assert error in got["error"], got

        await v1(401, "Missing authorization", params={}, json=body)
        await v1(401, "Invalid API key", params={"api_key": "sk_mcustt_wrong"}, json=body)
        # A tenant key in the header is not this endpoint's credential.
        await v1(401, "Missing authorization", params={}, json=body, headers=key_headers(key))
        await v1(400, "Empty request body", content=b"")
        await v1(400, "Invalid JSON", content=b"{not json")
        await v1(400, "Invalid JSON", json=[body])
        for missing in ("session_id", "message_id", "text"):
            partial = {k: v for k, v in body.items() if k != missing}
            await v1(400, "Missing session_id, message_id, or text", json=partial)
        await v1(400, "Missing session_id, message_id, or text", json={**body, "text": "  "})
        await v1(400, "must be strings", json={**body, "message_id": 7})
        await v1(400, "session_id", json={**body, "session_id": "s" * 129})
        await v1(
            415,
            "application/x-protobuf is not supported",
            content=b"\x0a\x02hi",
            headers={"content-type": "application/x-protobuf"},
        )


async def test_without_espeak_tts_is_503_and_the_server_stays_ready(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, tts="test_tts:MissingEspeak")
    async with run_server(settings) as srv, srv.client() as c:
        tenant = await new_tenant(srv)
        r = await speak(c, tenant["apiKey"])
        assert "espeak-ng" in error_of(r, 503, "TTS_UNAVAILABLE")["message"]
        assert r.headers["retry-after"] == "60"
        error_of(await c.get("/api/tts/voices", headers=key_headers(tenant["apiKey"])), 503)
        v1 = await c.post(
            "/v1/tts",
            params={"api_key": tenant["apiKey"]},
            json={"session_id": "s", "message_id": "m", "text": "Hi."},
        )
        assert v1.status_code == 503
        assert v1.json() == {"audio_url": "", "error": "TTS generation failed"}
        # Text to speech is optional: readiness does not depend on it.
        ready = await c.get("/readyz")
        assert ready.status_code == 200, ready.text


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with running_fake_openai() as fake:
        yield fake


async def test_the_openai_engine_speaks_through_the_server(db_url: str, fake: FakeOpenAI) -> None:
    settings = make_settings(
        db_url,
        tts="openai",
        openai_api_key="sk-test-tts",
        openai_base_url=fake.base_url,
        openai_timeout_s=5.0,
    )
    async with run_server(settings) as srv, srv.client() as c:
        tenant = await new_tenant(srv)
        voices = (await c.get("/api/tts/voices", headers=key_headers(tenant["apiKey"]))).json()
        assert voices["engine"] == "openai" and voices["defaultVoice"] == "alloy"
        r = await speak(c, tenant["apiKey"], voice="nova")
        assert r.status_code == 201, r.text
        audio = await c.get(r.json()["audioUrl"])
        # Stored as the endpoint sent it.
        assert audio.status_code == 200 and audio.content == speech_audio()
        [request] = fake.speech_requests
        assert request.body == {
            "model": "gpt-4o-mini-tts",
            "input": SENTENCE,
            "voice": "nova",
            "response_format": "opus",
        }
        assert request.headers["authorization"] == "Bearer sk-test-tts"
        error_of(await speak(c, tenant["apiKey"], voice="en-us"), 400, "UNKNOWN_VOICE")

        # The endpoint refusing (a permanent 4xx: no retries) is a 502, not the caller's fault.
        fake.speech_script.append(Reply.fail(401, "Incorrect API key provided"))
        error_of(await speak(c, tenant["apiKey"]), 502, "TTS_FAILED")
        fake.speech_script.append(Reply.fail(400, "fake refusal"))
        v1 = await c.post(
            "/v1/tts",
            params={"api_key": tenant["apiKey"]},
            json={"session_id": "s", "message_id": "m", "text": "Hi."},
        )
        assert v1.status_code == 502
        assert v1.json() == {"audio_url": "", "error": "TTS generation failed"}


async def test_openai_without_a_key_is_503(sqlite_url: str) -> None:
    settings = replace(make_settings(sqlite_url, tts="openai"), openai_api_key=None)
    async with run_server(settings) as srv, srv.client() as c:
        tenant = await new_tenant(srv)
        r = await speak(c, tenant["apiKey"])
        assert "OPENAI_API_KEY" in error_of(r, 503, "TTS_UNAVAILABLE")["message"]


async def test_keys_and_signatures_never_reach_the_logs(sqlite_url: str) -> None:
    async with run_server(make_settings(sqlite_url)) as srv:
        tenant = await new_tenant(srv)
        key = tenant["apiKey"]
        with capture() as captured:
            async with srv.client() as c:
                doc = (await speak(c, key)).json()
                sig = parse_qs(urlsplit(doc["audioUrl"]).query)["sig"][0]
                assert (await c.get(doc["audioUrl"])).status_code == 200
                v1 = await c.post(
                    "/v1/tts",
                    params={"api_key": key},
                    json={"session_id": "s", "message_id": "m", "text": "Hi."},
                )
                v1_sig = parse_qs(urlsplit(v1.json()["audio_url"]).query)["sig"][0]
                bad = await c.post("/v1/tts", params={"api_key": key + "x"}, json={})
                assert bad.status_code == 401
        # The server's lines (the test's own httpx client logs its request URLs).
        logged = [x for x in records(captured) if x.get("logger") != "httpx"]
        text = json.dumps(logged)
        for secret in (key, sig, v1_sig):
            assert secret not in text and secret[-20:] not in text
        spoken = [x for x in logged if x["event"] == "tts.spoken"]
        assert len(spoken) == 2 and all(x["tenant_id"] == tenant["tenantId"] for x in spoken)
        assert any(x["event"] == "request" and x["path"].startswith("/media/tts/") for x in logged)
