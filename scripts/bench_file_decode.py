"""Memory and time of decoding a long file for ``POST /api/transcribe`` (issue 15).

Usage::

    .venv/bin/python scripts/bench_file_decode.py [--minutes 60] [--keep /tmp/long.mp3]

Builds an mp3 of ``--minutes`` of speech (the standup fixture, repeated; 16 kHz mono),
then runs what a transcription does before recognition: ``probe``, and the streaming
decode (``_Decoder`` chunk by chunk, spooled to disk for the diarizer), and finally the
diarizer's read-back of the whole decoded audio. Prints the process's peak RSS after
each step: the decode must add next to nothing, the read-back exactly the decoded PCM.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import wave
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcustt.transcribe import _Decoder, _read_and_spool, _Spool, probe

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "standup_en.wav"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(path: Path, minutes: int) -> None:
    with wave.open(str(FIXTURE)) as w:
        pcm = w.readframes(w.getnframes())
    reps = minutes * 60 * 32000 // len(pcm) + 1
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp3", rate=16000, layout="mono")
        pts = 0
        for _ in range(reps):
            for i in range(0, len(pcm), 32000):
                chunk = pcm[i : i + 32000]
                frame = av.AudioFrame(format="s16", layout="mono", samples=len(chunk) // 2)
                frame.sample_rate = 16000
                frame.planes[0].update(chunk)
                frame.pts = pts
                pts += len(chunk) // 2
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "long.mp3")
    args = parser.parse_args()
    src: Path = args.keep
    if not src.exists():
        build(src, args.minutes)
        print(f"built {src} ({args.minutes} min); run again to measure in a fresh process")
        return
    print(f"file {src.stat().st_size / 1e6:.1f} MB; peak RSS at start {peak_mb():.0f} MB")
    started = time.perf_counter()
    info = probe(src, max_audio_s=24 * 3600)
    decoder = _Decoder(src, max_audio_ms=2 * info.duration_ms + 30_000, keep_channels=True)
    with tempfile.TemporaryDirectory() as tmp:
        spool = _Spool(Path(tmp), keep=True)
        decoded = 0
        while (chunk := _read_and_spool(decoder, spool, None)) is not None:
            decoded += len(chunk)
        spool.close()
        decoder.close()
        took = time.perf_counter() - started
        print(
            f"decoded {decoded / 32000 / 60:.1f} min ({decoded / 1e6:.1f} MB PCM) in {took:.1f} s;"
            f" peak RSS {peak_mb():.0f} MB"
        )
        pcm, _ = spool.read_back()
        print(f"read back {len(pcm) / 1e6:.1f} MB for the diarizer; peak RSS {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
