"""Live Opus on ``/ws/stt?encoding=opus`` (issue 15): raw packets or an OGG/Opus stream.

:class:`OpusIngest` is one producer's audio front-end. Its first binary frame decides
the framing, once:

* it starts with ``OggS``: an OGG/Opus stream (what ``MediaRecorder`` with
  ``audio/ogg;codecs=opus``, ``ffmpeg -f ogg`` or ``opusenc`` write), cut into frames
  anywhere; :class:`OggOpusDemuxer` reassembles the pages' packets incrementally;
* anything else: one raw Opus packet per binary frame.

Either way the packets are decoded by :class:`mcustt.ingest.opus.OpusDecoder` (PyAV's
libopus; the decoder always runs at 48 kHz, so a stream encoded at any Opus rate is
decoded without being told the rate) to 16 kHz mono PCM16 for the pipeline.

The Ogg container is parsed here rather than by PyAV's demuxer: ``av.open`` wants a
file it can read from (a blocking read, so a thread per stream), while the page format
(RFC 3533) is 27 header bytes and a lacing table, parsed as the frames arrive.

Decoding stays on the event loop: a 20 ms packet decodes and resamples in about 43 µs
(measured, see :mod:`mcustt.ingest.opus`), less than a hop to a thread costs.

Bad input: a packet libopus rejects is skipped and counted (one corrupt packet must
not end a live stream); :data:`MAX_BAD_PACKETS` of the last :data:`BAD_WINDOW` (the
producer is not sending Opus: libopus rejects about half of random byte strings, so a
"in a row" rule would never fire on PCM sent by mistake) end the socket with
``INVALID_AUDIO_FORMAT`` (close 1003). Framing that is not Ogg after an ``OggS`` start is
refused at once.
"""

from __future__ import annotations

import struct
from collections import deque

from mcustt.errors import FrameTooLarge, InvalidAudioFormat
from mcustt.ingest.audio import MAX_FRAME_BYTES
from mcustt.ingest.opus import OpusDecoder

OGG_MAGIC = b"OggS"
#: the largest raw Opus packet: 120 ms of 48 frames of 1275 bytes, plus the TOC bytes
MAX_PACKET_BYTES = 64 * 1024
#: packets libopus rejected among the last BAD_WINDOW before the stream is refused
MAX_BAD_PACKETS = 20
BAD_WINDOW = 50
#: Opus sample rates a producer may declare with ``?sample_rate`` (informational: the
#: decoder needs no rate, Opus carries its own timing)
OPUS_RATES = frozenset({8_000, 12_000, 16_000, 24_000, 48_000})
#: an Ogg page is at most 27 + 255 + 255 * 255 bytes; a packet spanning pages is
#: bounded like a raw one
_MAX_PENDING = 2 * 65_307 + MAX_PACKET_BYTES
_PAGE_HEADER = struct.Struct("<4sBBqIIIB")


class OggOpusDemuxer:
    """OGG pages in (cut anywhere) → Opus packets out, the two header packets apart.

    Only the first logical stream is followed (a chained or multiplexed file's other
    streams are ignored). ``channels`` is known once the ``OpusHead`` packet arrived.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._packet = bytearray()
        self._serial: int | None = None
        self._headers_seen = 0
        self.channels: int | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Audio packets completed by ``data``, in order.

        Raises:
            InvalidAudioFormat: not an Ogg stream, or not Opus inside.
        """
        self._buf += data
        if len(self._buf) > _MAX_PENDING:
            raise InvalidAudioFormat("an Ogg page larger than the format allows")
        out: list[bytes] = []
        while True:
            if len(self._buf) < _PAGE_HEADER.size:
                return out
            magic, version, _flags, _granule, serial, _seq, _crc, nsegs = _PAGE_HEADER.unpack_from(
                self._buf
            )
            if magic != OGG_MAGIC or version != 0:
                raise InvalidAudioFormat("the Ogg stream is corrupt (no page where one starts)")
            head = _PAGE_HEADER.size + nsegs
            if len(self._buf) < head:
                return out
            lacing = self._buf[_PAGE_HEADER.size : head]
            end = head + sum(lacing)
            if len(self._buf) < end:
                return out
            body = bytes(self._buf[head:end])
            del self._buf[:end]
            if self._serial is None:
                self._serial = serial
            if serial != self._serial:
                continue
            pos = 0
            for lace in lacing:
                self._packet += body[pos : pos + lace]
                pos += lace
                if len(self._packet) > MAX_PACKET_BYTES:
                    raise InvalidAudioFormat("an Opus packet in the Ogg stream is too large")
                if lace < 255:  # a packet ends on a lacing value below 255
                    packet = bytes(self._packet)
                    self._packet.clear()
                    audio = self._header_or_audio(packet)
                    if audio is not None:
                        out.append(audio)

    def _header_or_audio(self, packet: bytes) -> bytes | None:
        if self._headers_seen == 0:
            if not packet.startswith(b"OpusHead") or len(packet) < 19:
                raise InvalidAudioFormat(
                    "the Ogg stream does not carry Opus (no OpusHead); send OGG/Opus"
                )
            self.channels = max(1, min(2, packet[9]))
            self._headers_seen = 1
            return None
        if self._headers_seen == 1:
            self._headers_seen = 2  # OpusTags: nothing we need
            return None
        return packet


class OpusIngest:
    """One producer's Opus audio (raw packets or OGG/Opus) to 16 kHz mono PCM16.

    ``channels`` is the producer's declared channel count for raw packets (``?channels``;
    an OGG stream says its own in ``OpusHead``).
    """

    def __init__(self, *, channels: int = 2) -> None:
        self._channels = channels
        self.framing: str | None = None  # "raw" or "ogg", from the first frame
        self._demuxer: OggOpusDemuxer | None = None
        self._decoder: OpusDecoder | None = None
        self._recent: deque[bool] = deque(maxlen=BAD_WINDOW)  # True: rejected
        self.bad_packets = 0
        self.packets = 0

    def decode(self, frame: bytes) -> bytes:
        """PCM for one binary frame (possibly empty: the decoder holds partial chunks).

        Raises:
            FrameTooLarge: over 1 MB (an Ogg chunk) or 64 KB (a raw packet).
            InvalidAudioFormat: not Opus (see the module docstring).
        """
        if len(frame) > MAX_FRAME_BYTES:
            raise FrameTooLarge(f"audio frame of {len(frame)} bytes exceeds 1 MB")
        if not frame:
            return b""
        if self.framing is None:
            if frame[:4] == b"RIFF":
                raise InvalidAudioFormat("send Opus packets or an OGG/Opus stream, not WAV")
            self.framing = "ogg" if frame[:4] == OGG_MAGIC else "raw"
            if self.framing == "ogg":
                self._demuxer = OggOpusDemuxer()
        if self._demuxer is not None:
            packets = self._demuxer.feed(frame)
        else:
            if len(frame) > MAX_PACKET_BYTES:
                raise FrameTooLarge(
                    f"an Opus packet of {len(frame)} bytes exceeds {MAX_PACKET_BYTES} bytes"
                )
            packets = [frame]
        out = bytearray()
        for packet in packets:
            out += self._decode_packet(packet)
        return bytes(out)

    def _decode_packet(self, packet: bytes) -> bytes:
        if self._decoder is None:
            channels = self._channels
            if self._demuxer is not None and self._demuxer.channels is not None:
                channels = self._demuxer.channels
            self._decoder = OpusDecoder(channels=channels)
        decoder = self._decoder
        errors = decoder.errors
        pcm = decoder.decode(packet)
        self.packets += 1
        bad = decoder.errors > errors
        self._recent.append(bad)
        if not bad:
            return pcm
        self.bad_packets += 1
        recent_bad = sum(self._recent)
        if recent_bad >= MAX_BAD_PACKETS:
            raise InvalidAudioFormat(
                f"{recent_bad} of the last {len(self._recent)} Opus packets could not be "
                "decoded: send one raw Opus packet per binary frame, or an OGG/Opus stream"
            )
        return b""

    def flush(self) -> bytes:
        """What the decoder still holds (the producer left)."""
        return self._decoder.flush() if self._decoder is not None else b""
