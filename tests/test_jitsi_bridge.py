"""The Jitsi bridge (``/transcribe``, issue 14), driven by a fake videobridge that speaks
exactly what jitsi-videobridge's exporter sends (:mod:`fakes.videobridge`).

The speech tests use the default engine (pocketsphinx) on Opus-encoded fixtures, so the
checks are on words it reliably gets right: "weekly" in ``hello_en``, and some of
:data:`BOB_WORDS` in the part of ``standup_en`` Bob plays.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from conftest import Running, make_settings, new_tenant, read_wav, run_server
from fakes.videobridge import Endpoint, FakeVideobridge, encode_opus, schedule
from rest_helpers import client, error_of

from mcustt import bridges, logs
from mcustt.ingest.jitsi import as_int, decode_run, participant_of
from mcustt.ingest.opus import MAX_GAP_MS, OpusDecoder, ReorderBuffer

ALICE = Endpoint("a1ce0001", 111_222_333, first_seq=65_530)  # numbering wraps past 2^16
BOB = Endpoint("b0b00002", 444_555_666, first_seq=1_200)
#: words pocketsphinx gets right in Bob's part of the stand-up, through Opus and 3 % loss
#: (each run gets at least two of them)
BOB_WORDS = {"friday", "rollout", "decided", "migration", "migrate"}


# -- Opus decoding, reordering (no server) --------------------------------------------------


def test_opus_packets_decode_to_16k_mono_with_loss_concealed() -> None:
    pcm = read_wav("hello_en.wav")
    packets = encode_opus(pcm)
    decoder = OpusDecoder(channels=2)
    out = b"".join(decoder.decode(p) for p in packets) + decoder.flush()
    # 16 kHz mono PCM16: as long as the input, to within the codec's padding.
    assert abs(len(out) - len(pcm)) <= 32 * 40
    assert decoder.decoded == len(packets) and decoder.errors == 0
    # Speech survives: the decoded audio is not silence where the input is loud.
    loud = max(
        abs(int.from_bytes(out[i : i + 2], "little", signed=True)) for i in range(0, len(out), 2)
    )
    assert loud > 3000
    # A lost packet is its duration of silence; a long gap is capped, not invented.
    assert decoder.conceal(1) == bytes(20 * 32)
    assert len(decoder.conceal(10_000)) == MAX_GAP_MS * 32
    # A run of lost packets is one gap of silence, between the packets around it.
    fresh = OpusDecoder(channels=2)
    pcm_run = decode_run(fresh, [packets[0], None, None, packets[1]])
    assert bytes(40 * 32) in pcm_run
    # A corrupt packet is skipped (and counted if libopus refuses it), never raised.
    decoder.decode(b"\xff" * 3)


def test_reorder_buffer_restores_order_and_gives_up_on_holes() -> None:
    r = ReorderBuffer(depth=3)
    assert r.push(10, b"a") == [b"a"]
    assert r.push(12, b"c") == []  # 11 is late: wait for it
    assert r.push(11, b"b") == [b"b", b"c"]
    assert r.push(11, b"b") == [] and r.late == 1  # duplicate
    assert r.push(14, b"e") == []
    assert r.push(15, b"f") == []
    assert r.push(16, b"g") == [None, b"e", b"f", b"g"] and r.lost == 1  # 13 given up
    assert r.push(13, b"d") == [] and r.late == 2  # too late now
    # A new stream numbering (a jump) starts over, releasing nothing lost.
    assert r.push(90_000, b"x") == [b"x"] and r.restarts == 1
    assert r.push(90_002, b"z") == []
    assert r.flush() == [None, b"z"]


def test_mediajson_numbers_and_tags() -> None:
    assert as_int("42") == 42 and as_int(42) == 42 and as_int("-3") == -3
    assert as_int(True) is None and as_int("4.2") is None and as_int(None) is None
    assert as_int("9" * 30) is None
    assert participant_of("a1ce0001-111222333") == ("a1ce0001", "111222333")
    assert participant_of("someone") == ("someone", None)
    assert participant_of("abc-1", "ep42") == ("ep42", "1")
    pid, ssrc = participant_of("bad tag/with spaces")
    assert pid.startswith("t_") and ssrc is None


# -- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("info", stream=stream)
    try:
        yield stream
    finally:
        logs.configure("warning")


async def mint(srv: Running, key: str, **body: Any) -> dict[str, Any]:
    async with client(srv) as c:
        r = await c.post("/api/bridges", json=body, headers={"x-tenant-key": key})
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


def transcribe_url(srv: Running, key: str, meeting: str, **extra: str) -> str:
    query = {"sessionId": meeting, "sendBack": "true", "sendBackInterim": "true", **extra}
    if key:
        query["key"] = key
    return f"{srv.ws_url}/transcribe?" + "&".join(f"{k}={v}" for k, v in query.items())


async def meeting_session(srv: Running, key: str, meeting: str) -> dict[str, Any]:
    async with client(srv) as c:
        r = await c.get(f"/api/jitsi/meetings/{meeting}", headers={"x-tenant-key": key})
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def until(condition: Callable[[], object], timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting")


async def quiet(bridge: FakeVideobridge, *, for_s: float = 2.0, timeout: float = 90) -> None:
    """Until the server has sent nothing new for ``for_s`` (the recognizer caught up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen, since = -1, loop.time()
    while loop.time() < deadline:
        if len(bridge.results) != seen:
            seen, since = len(bridge.results), loop.time()
        elif loop.time() - since >= for_s:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the server kept sending")


async def refused(url: str) -> FakeVideobridge:
    bridge = await FakeVideobridge(url).connect()
    await bridge.closed()
    return bridge


# -- credentials, protocol plumbing (no speech) ---------------------------------------------


async def test_bridge_credentials_are_minted_listed_revoked_and_checked(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # open sockets re-check their credential at each lease renewal (10 s in production)
    monkeypatch.setattr(bridges, "LEASE_RENEW_S", 0.3)
    tenant = await new_tenant(server)
    key = tenant["apiKey"]
    doc = await mint(server, key, name="jvb-eu-1")
    assert doc["key"].startswith("brk_") and doc["note"] == "shown once"
    assert doc["name"] == "jvb-eu-1" and doc["revokedAt"] is None
    assert doc["urlTemplate"].startswith(f"{server.ws_url}/transcribe?sessionId={{{{MEETING_ID}}}}")
    assert f"key={doc['key']}" in doc["urlTemplate"]
    async with client(server) as c:
        r = await c.get("/api/bridges", headers={"x-tenant-key": key})
        assert r.status_code == 200
        [listed] = r.json()["bridges"]
        assert listed["id"] == doc["id"] and "key" not in listed
        assert doc["key"] not in r.text
        # not without the tenant key, nor with a bridge credential in its place
        error_of(await c.get("/api/bridges"), 401)
        error_of(await c.get("/api/bridges", headers={"x-tenant-key": doc["key"]}), 401)
        # another tenant cannot see or revoke it
        other = await new_tenant(server)
        r = await c.get("/api/bridges", headers={"x-tenant-key": other["apiKey"]})
        assert r.json() == {"bridges": []}
        r = await c.delete(f"/api/bridges/{doc['id']}", headers={"x-tenant-key": other["apiKey"]})
        error_of(r, 404, "BRIDGE_KEY_NOT_FOUND")

    # a working credential connects (and a meeting gets its session)
    bridge = await FakeVideobridge(transcribe_url(server, doc["key"], "m-creds")).connect()
    await bridge.ping(1)
    await until(lambda: bridge.pongs)
    assert bridge.pongs == [{"event": "pong", "id": 1}]
    assert (await meeting_session(server, key, "m-creds"))["status"] == "live"

    # revoking cuts the open socket too (at its next lease renewal)…
    async with client(server) as c:
        r = await c.delete(f"/api/bridges/{doc['id']}", headers={"x-tenant-key": key})
        assert r.status_code == 200 and r.json()["revokedAt"] is not None
        r = await c.delete(f"/api/bridges/{doc['id']}", headers={"x-tenant-key": key})
        assert r.status_code == 200  # idempotent
    await bridge.closed(timeout=20)
    assert (bridge.close_code, bridge.close_reason) == (1008, "BRIDGE_KEY_REVOKED")
    # …and refuses new ones, with a close code and a reason naming the error
    gone = await refused(transcribe_url(server, doc["key"], "m-creds"))
    assert gone.close_code == 1008 and gone.close_reason.startswith("BRIDGE_KEY_REVOKED")
    bad = await refused(transcribe_url(server, "brk_" + "x" * 43, "m-creds"))
    assert bad.close_code == 1008 and bad.close_reason.startswith("INVALID_BRIDGE_KEY")
    tenant_key = await refused(transcribe_url(server, key, "m-creds"))
    assert tenant_key.close_reason.startswith("INVALID_BRIDGE_KEY")
    missing = await refused(transcribe_url(server, "", "m-creds"))
    assert missing.close_reason.startswith("INVALID_BRIDGE_KEY")
    fresh = await mint(server, key)
    no_meeting = await refused(f"{server.ws_url}/transcribe?key={fresh['key']}")
    assert no_meeting.close_code == 1003 and no_meeting.close_reason.startswith("BAD_REQUEST")
    # the credential also works as a bearer header (Jicofo's transcription.http-headers)
    url = f"{server.ws_url}/transcribe?sessionId=m-hdr"
    bridge = await FakeVideobridge(url).connect(
        additional_headers={"authorization": f"Bearer {fresh['key']}"}
    )
    await bridge.ping(2)
    await until(lambda: bridge.pongs)
    await bridge.close()
    assert bridge.pongs == [{"event": "pong", "id": 2}]


async def test_garbage_is_skipped_and_the_session_ends_after_the_grace(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, jitsi_end_grace_s=0.5)
    async with run_server(settings) as srv:
        tenant = await new_tenant(srv)
        secret = (await mint(srv, tenant["apiKey"]))["key"]
        with captured_logs() as captured:
            bridge = await FakeVideobridge(transcribe_url(srv, secret, "m-garbage")).connect()
            assert bridge.ws is not None
            for junk in (
                "not json",
                "[1, 2]",
                json.dumps({"event": "media", "media": {"tag": "x-1", "payload": "%%%"}}),
                json.dumps({"event": "media", "media": "nope"}),
                json.dumps({"event": "start", "start": {"tag": 7}}),
                json.dumps({"event": "stop", "stop": {"tag": "never-started"}}),
                json.dumps({"event": "whatever"}),
                json.dumps({"event": "info", "app": "jvb"}),
                json.dumps({"event": "ping", "id": "not-a-number"}),
            ):
                await bridge.ws.send(junk)
            await bridge.ws.send(b"\x00\x01")
            await bridge.ping(7)
            await until(lambda: len(bridge.pongs) == 2)
            # still open, and pings are answered as the proxy does (the id when numeric)
            assert bridge.pongs == [{"event": "pong"}, {"event": "pong", "id": 7}]
            assert bridge.close_code is None
            sid = (await meeting_session(srv, tenant["apiKey"], "m-garbage"))["sessionId"]
            await bridge.close()
            # no bridge came back within the grace period: the meeting's session ends
            for _ in range(100):
                session = await srv.stored_session(sid)
                if session.status == "ended":
                    break
                await asyncio.sleep(0.1)
            assert session.status == "ended" and session.end_reason == "bridge-gone"
        text = captured.getvalue()
        assert secret not in text and secret[-20:] not in text
        assert "malformed JSON" in text and "unknown event" in text
        # a meeting that connects again after its session ended gets a new one
        again = await FakeVideobridge(transcribe_url(srv, secret, "m-garbage")).connect()
        await again.ping(8)
        await until(lambda: again.pongs)
        doc = await meeting_session(srv, tenant["apiKey"], "m-garbage")
        assert doc["sessionId"] != sid and doc["status"] == "live"
        await again.close()


async def test_session_end_from_the_bridge_and_oversized_frames(sqlite_server: Running) -> None:
    srv = sqlite_server
    tenant = await new_tenant(srv)
    secret = (await mint(srv, tenant["apiKey"]))["key"]
    packets, _, _ = schedule([(ALICE, encode_opus(bytes(32_000)), 0)])
    # media as numbers (mediajson parses both), then the bridge ends the meeting
    bridge = await FakeVideobridge(
        transcribe_url(srv, secret, "m-end"), numbers_as_strings=False
    ).connect()
    await bridge.play(packets, [ALICE], speed=50)
    await bridge.send_json({"event": "stop", "stop": {"tag": ALICE.tag}})
    await bridge.send_json({"event": "session-end"})
    await bridge.closed()
    assert (bridge.close_code, bridge.close_reason) == (1000, "SESSION_ENDED")
    doc = await meeting_session(srv, tenant["apiKey"], "m-end")
    session = await srv.stored_session(doc["sessionId"])
    assert session.status == "ended" and session.end_reason == "jitsi-session-end"
    assert session.audio_ms >= 900  # the second of (silent) audio went through the track
    # a frame over 1 MB closes the socket (1009), as on /ws/stt
    big = await FakeVideobridge(transcribe_url(srv, secret, "m-big")).connect()
    assert big.ws is not None
    await big.ws.send(json.dumps({"event": "info", "pad": "x" * (1024 * 1024)}))
    await big.closed()
    assert big.close_code == 1009


# -- speech, end to end ----------------------------------------------------------------------


@pytest.fixture
async def sphinx_server(db_url: str) -> AsyncIterator[Running]:
    settings = make_settings(db_url, recognizer="sphinx", recognizer_workers=2)
    async with run_server(settings) as srv:
        yield srv


def words_of(results: list[dict[str, Any]]) -> set[str]:
    return set(re.findall(r"[\w']+", " ".join(r["transcript"][0]["text"] for r in results).lower()))


async def test_two_participants_overlap_through_loss_reorder_and_a_reconnect(
    sphinx_server: Running,
) -> None:
    srv = sphinx_server
    tenant = await new_tenant(srv)
    key = tenant["apiKey"]
    secret = (await mint(srv, key))["key"]
    url = transcribe_url(srv, secret, "meeting-42", lang="en-US")
    pause = bytes(2 * 32_000)  # 2 s: each track's VAD closes its last utterance
    hello = encode_opus(read_wav("hello_en.wav") + pause)
    standup = read_wav("standup_en.wav")
    # Bob: the second voice of the stand-up (6-21 s: "…decided…", "…migration."),
    # starting while Alice is still greeting everyone.
    bob = encode_opus(standup[6 * 32_000 : 21 * 32_000] + pause)

    with captured_logs() as captured:
        # First connection: Alice talks, Bob talks over her; 3 % loss, 5 % reordered.
        # Bob's media comes before his start (the bridge reconnected mid-stream, say).
        first = await FakeVideobridge(url).connect()
        packets, lost, swapped = schedule(
            [(ALICE, hello, 0), (BOB, bob, 2_000)], lose=0.03, reorder=0.05
        )
        assert lost and swapped
        await first.start(ALICE)
        await first.play(packets, [ALICE, BOB], start=False, speed=6)
        await first.ping(41)
        await quiet(first)
        await first.close()  # the bridge drops: both tracks are finalized, released

        # Second connection (a reconnect, same meeting): Alice speaks again.
        second = await FakeVideobridge(url).connect()
        packets, _, _ = schedule([(ALICE, hello, 0)])
        await second.play(packets, [ALICE], speed=6)
        await quiet(second)
        await second.close()
    text = captured.getvalue()

    # OTP results came back on the bridge's sockets: interims and finals, per participant
    alice_id, bob_id = ALICE.endpoint_id, BOB.endpoint_id
    for result in first.results + second.results:
        assert set(result) >= {
            "type",
            "event",
            "is_interim",
            "transcript",
            "participant",
            "language",
            "message_id",
            "timestamp",
        }
        assert result["type"] == result["event"] == "transcription-result"
        assert result["language"] == "en-US" and isinstance(result["timestamp"], int)
        assert result["participant"]["id"] in (alice_id, bob_id)
    assert first.finals(alice_id) and first.finals(bob_id) and second.finals(alice_id)
    assert first.interims(alice_id) and first.interims(bob_id)
    assert first.finals(bob_id)[0]["participant"]["ssrc"] == str(BOB.ssrc)
    # a line's interims share its final's message id
    for final in first.finals():
        same = [r for r in first.results if r["message_id"] == final["message_id"]]
        assert same[-1] is final and all(r["is_interim"] for r in same[:-1])
    assert "weekly" in words_of(first.finals(alice_id)) | words_of(second.finals(alice_id))
    assert len(words_of(first.finals(bob_id)) & BOB_WORDS) >= 2
    assert first.pongs == [{"event": "pong", "id": 41}]
    assert "media before start" in text

    # One session for the meeting, both sockets' finals in it, under the right speaker,
    # with one gap-free seq across the reconnect (no final lost). (A final made while a
    # socket closes is stored but cannot reach that socket: the trailing pause lets
    # every utterance end before the close.)
    doc = await meeting_session(srv, key, "meeting-42")
    lines = await srv.state.repo.lines(doc["sessionId"])
    assert [ln.seq for ln in lines] == list(range(1, len(lines) + 1))
    sent = [(r["participant"]["id"], r["transcript"][0]["text"]) for r in first.finals()]
    sent += [(r["participant"]["id"], r["transcript"][0]["text"]) for r in second.finals()]
    assert sorted(sent) == sorted((ln.speaker or "", ln.text) for ln in lines)
    by_speaker = {
        speaker: set(re.findall(r"[\w']+", " ".join(ln.text for ln in group).lower()))
        for speaker, group in itertools.groupby(
            sorted(lines, key=lambda ln: ln.speaker or ""), key=lambda ln: ln.speaker
        )
    }
    assert "weekly" in by_speaker[alice_id]
    assert len(by_speaker[bob_id] & BOB_WORDS) >= 2
    assert not by_speaker[alice_id] & BOB_WORDS
    # The transcript as any other session's, with speakers.
    async with client(srv) as c:
        r = await c.get(
            f"/api/sessions/{doc['sessionId']}/transcript", headers={"x-tenant-key": key}
        )
        assert r.status_code == 200
        assert {ln.get("speaker", {}).get("id") for ln in r.json()["lines"]} == {alice_id, bob_id}
    # The bridge credential never reached the logs (uvicorn logs the handshake's URL).
    assert "/transcribe" in text
    assert secret not in text and secret[-20:] not in text
