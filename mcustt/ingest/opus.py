"""Raw Opus packets to 16 kHz mono PCM16 (PyAV's libopus), with a small reorder buffer.

Used by the Jitsi bridge (:mod:`mcustt.ingest.jitsi`, one decoder per participant tag)
and meant for ``/ws/stt?encoding=opus`` too: any adapter that receives bare Opus
packets (no RTP, no Ogg) hands them here in arrival order with their sequence number.

Decoding runs on the event loop, on purpose: one 20 ms packet decodes and resamples in
about 40-60 µs (measured with this PyAV/libopus), less than a hop to a worker thread
and back costs, and a track makes 50 of them a second. A batch of packets (a bridge
catching up after a stall) is at most the reorder depth plus what one WebSocket frame
carries, so no single call holds the loop for long.

Loss: a missing packet (a gap in the sequence numbers that the reorder window gave up
on) becomes silence of the last packet's duration, up to :data:`MAX_GAP_MS` per gap.
ffmpeg's libopus wrapper offers no packet-loss concealment through PyAV (an empty packet
means end of stream), and for speech recognition silence is as good: what matters is
that the track's timeline (VAD timing, the transcript's audio offsets) stays right. A
longer gap is a stall or a discontinuity, not loss: it is not filled (minutes of
invented silence would be billed as audio).
"""

from __future__ import annotations

from typing import Any

from mcustt.ingest.audio import PcmResampler

#: Opus always runs at 48 kHz internally; RTP timestamps of Opus count at that rate.
OPUS_RATE = 48_000
#: a gap of lost packets filled with silence, at most (longer: a stall, not filled)
MAX_GAP_MS = 1_000
#: packets held to put reordered ones back in place (20 ms each: 100 ms of latency)
REORDER_DEPTH = 5
#: a jump in sequence numbers this large (either way) is a restarted stream, not loss
RESTART_JUMP = 3_000
#: bytes of 16 kHz mono PCM16 per millisecond
_BYTES_PER_MS = 32


class OpusDecoder:
    """One Opus stream (one participant's track) to 16 kHz mono PCM16.

    ``channels`` is what the sender declared (Jitsi says 2): the decoder outputs that
    layout and the resampler downmixes, so a stereo stream is decoded as sent.
    """

    def __init__(self, *, channels: int = 2) -> None:
        import av  # lazily: PyAV is slow to import and only Opus ingest needs it

        self._codec: Any = av.CodecContext.create("libopus", "r")
        self._codec.sample_rate = OPUS_RATE
        self._codec.layout = "stereo" if channels == 2 else "mono"
        self._packet = av.Packet
        self._resampler = PcmResampler()
        #: duration of the last decoded packet (what one lost packet is worth)
        self.last_packet_ms = 20
        self.decoded = 0
        self.concealed_ms = 0
        self.errors = 0

    def decode(self, packet: bytes) -> bytes:
        """PCM for one packet (whole 20 ms chunks; the rest is held for the next call).

        A packet libopus rejects is counted in :attr:`errors` and yields nothing: one
        corrupt packet must not end a participant's track.
        """
        import av  # already imported by __init__; the error class lives there

        try:
            frames = self._codec.decode(self._packet(packet))
        except (av.FFmpegError, ValueError):
            self.errors += 1
            return b""
        out = bytearray()
        for frame in frames:
            if frame.sample_rate:
                self.last_packet_ms = max(1, round(frame.samples * 1000 / frame.sample_rate))
            out += self._resampler.convert(frame)
        self.decoded += 1
        return bytes(out)

    def conceal(self, lost: int) -> bytes:
        """Silence standing in for ``lost`` missing packets (bounded by MAX_GAP_MS)."""
        ms = min(lost * self.last_packet_ms, MAX_GAP_MS)
        if ms <= 0:
            return b""
        self.concealed_ms += ms
        return bytes(ms * _BYTES_PER_MS)

    def flush(self) -> bytes:
        """What the resampler still holds (the end of the track)."""
        return self._resampler.flush()


class ReorderBuffer:
    """Puts packets back in sequence order, waiting for at most ``depth`` packets.

    :meth:`push` returns what is ready, in order: each entry is a packet, or ``None``
    for a packet given up as lost (the caller conceals it). A packet older than what
    was already released (late past the window, or a duplicate) is dropped and counted.
    A jump of :data:`RESTART_JUMP` or more (the sender restarted its numbering, e.g. a
    new RTP stream) releases what is held and starts over from the new number.
    """

    def __init__(self, depth: int = REORDER_DEPTH) -> None:
        self.depth = depth
        self._held: dict[int, bytes] = {}
        self._next: int | None = None
        self.late = 0
        self.lost = 0
        self.restarts = 0

    def push(self, seq: int, packet: bytes) -> list[bytes | None]:
        out: list[bytes | None] = []
        if self._next is None:
            self._next = seq
        elif abs(seq - self._next) >= RESTART_JUMP:
            out += self.flush()
            self.restarts += 1
            self._next = seq
        if seq < self._next or seq in self._held:
            self.late += 1
            return out
        self._held[seq] = packet
        out += self._drain()
        return out

    def _drain(self) -> list[bytes | None]:
        out: list[bytes | None] = []
        assert self._next is not None
        while self._held:
            packet = self._held.pop(self._next, None)
            if packet is None:
                # A hole: wait for it while the window has room, else give it up.
                if max(self._held) - self._next < self.depth:
                    break
                out.append(None)
                self.lost += 1
            else:
                out.append(packet)
            self._next += 1
        return out

    def flush(self) -> list[bytes | None]:
        """Everything held, in order, holes as ``None`` (the stream ended)."""
        out: list[bytes | None] = []
        if self._next is None:
            return out
        while self._held:
            packet = self._held.pop(self._next, None)
            if packet is None:
                self.lost += 1
            out.append(packet)
            self._next += 1
        return out
