"""A WHIP producer for tests and the benchmark: an aiortc peer connection whose audio
track plays PCM16 16 kHz mono at real-time pace, like a microphone would."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from dataclasses import dataclass
from typing import Any

import av
import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from mcustt.ingest.whip import gather_on

FRAME_SAMPLES = 320  # 20 ms at 16 kHz
LOOPBACK = ["127.0.0.1"]


class PcmTrack(MediaStreamTrack):
    """Plays ``pcm`` (PCM16 16 kHz mono) in 20 ms frames, paced on the wall clock; then
    ends (``loop=False``) or starts over. ``ended`` is set after the last frame."""

    kind = "audio"

    def __init__(self, pcm: bytes, *, loop: bool = False) -> None:
        super().__init__()
        self.pcm = pcm
        self.loop = loop
        self.sent = 0  # frames
        self.started: float | None = None
        self.finished = asyncio.Event()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.started is None:
            self.started = time.monotonic()
        else:
            delay = self.started + self.sent * 0.020 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        offset = (self.sent * FRAME_SAMPLES * 2) % len(self.pcm) if self.loop else None
        if offset is None:
            offset = self.sent * FRAME_SAMPLES * 2
            if offset >= len(self.pcm):
                self.finished.set()
                self.stop()
                raise MediaStreamError
        chunk = self.pcm[offset : offset + FRAME_SAMPLES * 2]
        chunk = chunk.ljust(FRAME_SAMPLES * 2, b"\x00")
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(chunk)
        frame.sample_rate = 16000
        frame.pts = self.sent * FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, 16000)
        self.sent += 1
        return frame


@dataclass
class Published:
    pc: Any
    track: PcmTrack
    response: httpx.Response
    answer_ms: float

    @property
    def location(self) -> str:
        return self.response.headers["location"]

    @property
    def session_id(self) -> str:
        return self.response.headers["x-session-id"]

    @property
    def subscribe_token(self) -> str:
        return self.response.headers["x-subscribe-token"]


async def make_offer(
    track: MediaStreamTrack | None = None, *, data_only: bool = False
) -> tuple[Any, str]:
    """A client peer connection and its complete (non-trickle) offer, on loopback."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if data_only:
        pc.createDataChannel("chat")
    elif track is not None:
        pc.addTransceiver(track, direction="sendonly")
    else:
        pc.addTransceiver("audio", direction="sendonly")
    with gather_on(LOOPBACK):
        await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def publish(
    client: httpx.AsyncClient,
    pcm: bytes,
    *,
    token: str | None = None,
    tenant_key: str | None = None,
    loop: bool = False,
) -> Published:
    """POST an offer with a PcmTrack; apply the answer. Raises on a non-201."""
    track = PcmTrack(pcm, loop=loop)
    pc, offer = await make_offer(track)
    headers = {"content-type": "application/sdp"}
    if tenant_key:
        headers["x-tenant-key"] = tenant_key
    params = {"token": token} if token else {}
    started = time.perf_counter()
    try:
        r = await client.post("/api/webrtc", content=offer, headers=headers, params=params)
        answer_ms = (time.perf_counter() - started) * 1000
        if r.status_code != 201:
            raise RuntimeError(f"WHIP POST answered {r.status_code}: {r.text}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
    except BaseException:
        await pc.close()
        raise
    return Published(pc, track, r, answer_ms)


async def wait_connected(pc: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            raise RuntimeError(f"peer connection {pc.connectionState}")
        await asyncio.sleep(0.05)


async def close(pc: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pc.close(), 10)
