"""A stand-in for a Jitsi videobridge's exporter: it speaks exactly what the real one
puts on the wire to an opus-transcriber-proxy (``/transcribe``).

As in jitsi-videobridge's ``MediaJsonSerializer`` and Jitsi's mediajson library: one
``start`` per SSRC (tag ``"<endpointId>-<ssrc>"``, ``mediaFormat`` ``{"encoding":
"OPUS","sampleRate":48000,"channels":2}``, ``customParameters.endpointId``), then one
``media`` per RTP packet whose ``chunk`` is the extended RTP sequence number (starting
anywhere), ``timestamp`` the RTP time at 48 kHz and ``payload`` the base64 Opus packet;
the top-level ``sequenceNumber`` counts every event. mediajson serializes
``sequenceNumber``, ``chunk`` and ``timestamp`` as JSON strings; ``numbers_as_strings``
does the same (the default). Pings are ``{"event":"ping","id":N}``.

The audio is real: speech fixtures encoded by PyAV's libopus at 48 kHz in 20 ms packets
(:func:`encode_opus`), so the server decodes what a browser's Opus encoder would send.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import av
import websockets
from websockets.asyncio.client import ClientConnection

PACKET_MS = 20
SAMPLES_PER_PACKET = 960  # 20 ms at 48 kHz


def encode_opus(pcm16k: bytes, *, bitrate: int = 32_000) -> list[bytes]:
    """16 kHz mono PCM16 → Opus packets (48 kHz, 20 ms each), as WebRTC sends them."""
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm16k) // 2)
    frame.planes[0].update(pcm16k)
    frame.sample_rate = 16_000
    frame.pts = 0
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48_000)
    pcm48 = b"".join(
        bytes(f.planes[0])[: f.samples * 2]
        for f in [*resampler.resample(frame), *resampler.resample(None)]
    )
    encoder: Any = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = 48_000
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = bitrate
    encoder.options = {"frame_duration": str(PACKET_MS), "application": "voip"}
    encoder.open()
    step = SAMPLES_PER_PACKET * 2
    pcm48 += bytes(-len(pcm48) % step)  # whole packets
    packets: list[bytes] = []
    for i, offset in enumerate(range(0, len(pcm48), step)):
        f = av.AudioFrame(format="s16", layout="mono", samples=SAMPLES_PER_PACKET)
        f.planes[0].update(pcm48[offset : offset + step])
        f.sample_rate = 48_000
        f.pts = i * SAMPLES_PER_PACKET
        packets += [bytes(p) for p in encoder.encode(f)]
    packets += [bytes(p) for p in encoder.encode(None)]
    return packets


@dataclass
class Endpoint:
    """One conference participant as the bridge sees it: an endpoint id and an SSRC."""

    endpoint_id: str
    ssrc: int
    #: the RTP sequence number of its first packet (any value, as in RTP)
    first_seq: int = 31_000

    @property
    def tag(self) -> str:
        return f"{self.endpoint_id}-{self.ssrc}"


@dataclass(order=True)
class Packet:
    at_ms: int
    tag: str = field(compare=False)
    chunk: int = field(compare=False)
    timestamp: int = field(compare=False)
    payload: bytes = field(compare=False)


def schedule(
    tracks: Iterable[tuple[Endpoint, list[bytes], int]],
    *,
    lose: float = 0.0,
    reorder: float = 0.0,
    seed: int = 14,
) -> tuple[list[Packet], int, int]:
    """The packets of several endpoints, each starting at its offset (ms), merged in
    time order as the bridge forwards them; ``lose`` drops that share of packets and
    ``reorder`` swaps that share of neighbours. Returns (packets, lost, swapped)."""
    rng = random.Random(seed)
    out: list[Packet] = []
    lost = 0
    for endpoint, packets, offset_ms in tracks:
        for i, payload in enumerate(packets):
            if lose and 5 < i < len(packets) - 5 and rng.random() < lose:
                lost += 1
                continue
            out.append(
                Packet(
                    offset_ms + i * PACKET_MS,
                    endpoint.tag,
                    endpoint.first_seq + i,
                    (offset_ms + i * PACKET_MS) * 48,
                    payload,
                )
            )
    out.sort()
    swapped = 0
    for i in range(len(out) - 1):
        if reorder and rng.random() < reorder:
            out[i], out[i + 1] = out[i + 1], out[i]
            swapped += 1
    return out, lost, swapped


@dataclass
class FakeVideobridge:
    """One exporter connection to ``url`` (``/transcribe?...``)."""

    url: str
    numbers_as_strings: bool = True
    results: list[dict[str, Any]] = field(default_factory=list)
    pongs: list[dict[str, Any]] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    seq: int = 0
    ws: ClientConnection | None = None
    _reader: asyncio.Task[None] | None = None
    _started: set[str] = field(default_factory=set)

    async def connect(self, **kwargs: Any) -> FakeVideobridge:
        self.ws = await websockets.connect(self.url, max_size=None, **kwargs)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg.get("type") == "transcription-result":
                    self.results.append(msg)
                elif msg.get("event") == "pong":
                    self.pongs.append(msg)
                else:
                    self.other.append(msg)
        except websockets.ConnectionClosed:
            pass
        self.close_code = self.ws.close_code
        self.close_reason = self.ws.close_reason or ""

    def _num(self, value: int) -> int | str:
        return str(value) if self.numbers_as_strings else value

    async def send_json(self, doc: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(doc))

    async def start(self, endpoint: Endpoint) -> None:
        """The ``start`` the exporter sends before an SSRC's first packet."""
        self.seq += 1
        self._started.add(endpoint.tag)
        await self.send_json(
            {
                "event": "start",
                "sequenceNumber": self._num(self.seq),
                "start": {
                    "tag": endpoint.tag,
                    "mediaFormat": {"encoding": "OPUS", "sampleRate": 48000, "channels": 2},
                    "customParameters": {"endpointId": endpoint.endpoint_id},
                },
            }
        )

    async def media(self, packet: Packet) -> None:
        self.seq += 1
        await self.send_json(
            {
                "event": "media",
                "sequenceNumber": self._num(self.seq),
                "media": {
                    "tag": packet.tag,
                    "chunk": self._num(packet.chunk),
                    "timestamp": self._num(packet.timestamp),
                    "payload": base64.b64encode(packet.payload).decode(),
                },
            }
        )

    async def play(
        self,
        packets: list[Packet],
        endpoints: Iterable[Endpoint],
        *,
        start: bool = True,
        speed: float = 4.0,
    ) -> None:
        """Send the packets, each endpoint's ``start`` first (unless ``start`` is False:
        media before start), ``speed`` times faster than real time."""
        by_tag = {e.tag: e for e in endpoints}
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for packet in packets:
            if start and packet.tag not in self._started:
                await self.start(by_tag[packet.tag])
            delay = t0 + packet.at_ms / 1000 / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.media(packet)

    async def ping(self, ping_id: int) -> None:
        await self.send_json({"event": "ping", "id": ping_id})

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 10)

    async def closed(self, timeout: float = 10) -> None:
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)

    def finals(self, participant: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.results
            if not r["is_interim"]
            and (participant is None or r["participant"]["id"] == participant)
        ]

    def interims(self, participant: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.results
            if r["is_interim"] and (participant is None or r["participant"]["id"] == participant)
        ]
