"""Stereo files with one speaker per channel (a phone call recorded per leg, an
interview with a microphone per person): turns from which channel is talking.

Per 30 ms frame, each channel is asked whether it holds speech (webrtcvad, the
server's ``MCUSTT_VAD_AGGRESSIVENESS``); a frame belongs to the loudest channel that
does, so the other speaker leaking faintly into a microphone does not count and when
both talk at once the louder one has the frame (the same rule as the model's for
overlapping speech). Runs shorter than 200 ms are absorbed, pauses shorter than 300 ms
bridged.

Channels are only trusted when they really are separate: at least half of the speech
frames must have one channel at least 6 dB above the other(s), and at least two
channels must each be that clear owner of 5 % of those frames. Otherwise the file is a
mono recording saved as stereo (the same sound in both, or one always louder), a
stereo mix, or a call where only one side spoke, and :func:`channel_turns` answers
``None`` so that the caller diarizes the downmix instead. Plain Python (no NumPy: this works
without the diarization extra); about a second per channel-hour of CPU.
"""

from __future__ import annotations

from array import array
from operator import mul

import webrtcvad

FRAME_MS = 30
_FRAME_BYTES = 16 * FRAME_MS * 2
#: energy ratio (6 dB) that makes a channel the clear owner of a frame
_DOMINANCE = 4.0
#: the share of speech frames that must have a clear owner for channels to be trusted
_SEPARATED_SHARE = 0.5
#: the share of those frames that at least two channels must each own
_OWNER_SHARE = 0.05
_MIN_RUN_MS = 200
_BRIDGE_MS = 300

#: one turn: (channel index, start ms, end ms)
ChannelTurn = tuple[int, int, int]


def _energy(frame: bytes) -> float:
    samples = array("h", frame)
    return float(sum(map(mul, samples, samples)))


def voiced_frames(pcm: bytes, vad_aggressiveness: int = 2) -> list[bool]:
    """Whether each whole 30 ms frame of ``pcm`` (16 kHz mono PCM16) holds speech."""
    vad = webrtcvad.Vad(vad_aggressiveness)
    return [
        vad.is_speech(pcm[i : i + _FRAME_BYTES], 16_000)
        for i in range(0, len(pcm) - _FRAME_BYTES + 1, _FRAME_BYTES)
    ]


def channel_turns(channels: list[bytes], vad_aggressiveness: int = 2) -> list[ChannelTurn] | None:
    """Turns of ``channels`` (each 16 kHz mono PCM16, all the same length), named by
    channel index; ``None`` when the channels do not separate the speakers."""
    if len(channels) < 2 or all(c == channels[0] for c in channels[1:]):
        return None
    vad = webrtcvad.Vad(vad_aggressiveness)
    n_frames = len(channels[0]) // _FRAME_BYTES
    owners: list[int | None] = []
    speech_frames = 0
    clear_frames = 0
    owned = [0] * len(channels)
    for i in range(n_frames):
        lo, hi = i * _FRAME_BYTES, (i + 1) * _FRAME_BYTES
        frames = [c[lo:hi] for c in channels]
        voiced = [k for k, f in enumerate(frames) if vad.is_speech(f, 16_000)]
        if not voiced:
            owners.append(None)
            continue
        speech_frames += 1
        energies = [_energy(f) for f in frames]
        loudest = max(range(len(frames)), key=energies.__getitem__)
        others = max((e for k, e in enumerate(energies) if k != loudest), default=0.0)
        if energies[loudest] >= _DOMINANCE * others:
            clear_frames += 1
            owned[loudest] += 1
        owners.append(loudest if loudest in voiced else max(voiced, key=energies.__getitem__))
    if speech_frames == 0:
        return []
    if clear_frames < _SEPARATED_SHARE * speech_frames:
        return None
    if sum(1 for n in owned if n >= _OWNER_SHARE * clear_frames) < 2:
        return None
    return _smooth(owners)


def _smooth(owners: list[int | None]) -> list[ChannelTurn]:
    runs: list[list[int]] = []  # [owner, first frame, end frame]
    for i, owner in enumerate(owners):
        if owner is None:
            continue
        if runs and runs[-1][0] == owner and (i - runs[-1][2]) * FRAME_MS <= _BRIDGE_MS:
            runs[-1][2] = i + 1
        else:
            runs.append([owner, i, i + 1])
    # A short run between two of another speaker's is absorbed into them (a cough, a
    # burst of crosstalk); a short run elsewhere stays, as someone's brief answer.
    kept: list[list[int]] = []
    for k, run in enumerate(runs):
        short = (run[2] - run[1]) * FRAME_MS < _MIN_RUN_MS
        before = kept[-1] if kept else None
        after = runs[k + 1] if k + 1 < len(runs) else None
        if short and before is not None and after is not None and before[0] == after[0]:
            before[2] = run[2]
            continue
        if before is not None and before[0] == run[0]:
            before[2] = run[2]
        else:
            kept.append(list(run))
    return [(owner, first * FRAME_MS, end * FRAME_MS) for owner, first, end in kept]
