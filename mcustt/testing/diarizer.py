"""The diarization seam's contract, as a test suite any diarizer can run against itself,
and the multi-voice recordings it is measured on.

**Recordings.** :func:`conversation` speaks a script with espeak-ng (several voices,
lines that overlap where the script says so) and mixes it to 16 kHz mono PCM16, with
the reference turns (each line from its first to its last sound) and, for
``stereo=True``, one channel per speaker, each hearing the other faintly (crosstalk at
-24 dB). espeak-ng's output is deterministic, so the same script gives the same
samples; nothing large is committed. :data:`MEETING_3` (three voices, two overlaps),
:data:`MEETING_4` (four voices) and :data:`INTERVIEW` (two voices, stereo) are the
scripts mcustt's own tests and ``scripts/bench_diarization.py`` use.

**Contract.** Subclass :class:`DiarizerContract` in a test module (the subclass's name
starts with ``Test``) and provide the fixture ``diarizer``: the diarizer as the app
builds it. What is asserted is what :mod:`mcustt.diarization.base` documents: turns
sorted, not overlapping, named ``"0"``, ``"1"``… in order of first speech; a stereo
file with one speaker per channel split by channel whatever the diarizer; mono audio
either diarized (three voices found, error rate under :data:`MAX_DER`) or refused with
:class:`DiarizationUnavailable` saying what to install; odd PCM refused as a 400; the
event loop kept running; concurrent calls agreeing; ``aclose`` callable twice.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import shutil
import subprocess
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import av
import pytest

from mcustt.diarization import DiarizationUnavailable, Diarizer, Turn
from mcustt.diarization.der import diarization_error_rate
from mcustt.errors import BadRequest
from mcustt.types import SAMPLE_RATE

__all__ = [
    "INTERVIEW",
    "MAX_DER",
    "MEETING_3",
    "MEETING_4",
    "Conversation",
    "DiarizerContract",
    "Line",
    "conversation",
    "speak",
]

#: the error rate (250 ms collar) a diarizer must stay under on :data:`MEETING_3`:
#: resemblyzer measures 0.033 there; 0.25 leaves room for a worse machine's
#: float rounding, not for a wrong speaker on a whole line (that alone is about 0.1)
MAX_DER = 0.25
COLLAR_MS = 250
#: crosstalk: how loud each speaker is in the other's channel
BLEED_DB = -24.0


@dataclass(frozen=True)
class Line:
    """One line of a script: ``speaker`` (a label) says ``text`` in espeak-ng's
    ``voice``, starting ``gap_s`` after the previous line ended (negative: over it)."""

    speaker: str
    voice: str
    text: str
    gap_s: float = 0.6


@dataclass(frozen=True)
class Conversation:
    name: str
    #: the mono mix, 16 kHz PCM16
    pcm: bytes
    #: who really spoke when (speakers named by the script's labels)
    reference: list[Turn]
    #: one channel per speaker, in order of first line (``stereo=True`` only)
    channels: list[bytes] | None

    @property
    def speakers(self) -> int:
        return len({t.speaker for t in self.reference})

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE

    @property
    def overlap_s(self) -> float:
        """Seconds during which two reference speakers talk at once."""
        turns = sorted(self.reference, key=lambda t: t.start_ms)
        total = 0
        for i, a in enumerate(turns):
            for b in turns[i + 1 :]:
                total += max(0, min(a.end_ms, b.end_ms) - max(a.start_ms, b.start_ms))
        return total / 1000


@functools.cache
def speak(text: str, voice: str) -> bytes:
    """``text`` in espeak-ng's ``voice``, as 16 kHz mono PCM16 without leading or
    trailing silence."""
    program = shutil.which("espeak-ng")
    if program is None:
        message = "espeak-ng is not installed (scripts/install installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    wav = subprocess.run(
        [program, "-v", voice, "--stdout", text], capture_output=True, check=True, timeout=60
    ).stdout
    out = bytearray()
    with av.open(io.BytesIO(wav), "r") as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            for mono in resampler.resample(frame):
                out += bytes(mono.planes[0])[: mono.samples * 2]
        for mono in resampler.resample(None):
            out += bytes(mono.planes[0])[: mono.samples * 2]
    samples = array("h", bytes(out))
    step = SAMPLE_RATE // 100  # 10 ms
    loud = [
        i
        for i in range(0, len(samples), step)
        if max(map(abs, samples[i : i + step]), default=0) > 300
    ]
    if not loud:
        return b""
    return samples[loud[0] : loud[-1] + step].tobytes()


def conversation(
    name: str, lines: Sequence[Line], *, stereo: bool = False, lead_s: float = 0.5
) -> Conversation:
    """Speak and mix a script (see the module's docstring)."""
    order: list[str] = []
    placed: list[tuple[str, int, array[int]]] = []  # speaker, start sample, samples
    at = int(lead_s * SAMPLE_RATE)
    previous_end = at
    for k, line in enumerate(lines):
        samples = array("h", speak(line.text, line.voice))
        start = at if k == 0 else max(0, previous_end + int(line.gap_s * SAMPLE_RATE))
        placed.append((line.speaker, start, samples))
        previous_end = start + len(samples)
        if line.speaker not in order:
            order.append(line.speaker)
    length = max(start + len(s) for _, start, s in placed) + int(lead_s * SAMPLE_RATE)
    bleed = 10 ** (BLEED_DB / 20)
    mixes = {speaker: [0.0] * length for speaker in order} if stereo else {}
    mono = [0.0] * length
    reference = []
    for speaker, start, samples in placed:
        reference.append(
            Turn(speaker, start * 1000 // SAMPLE_RATE, (start + len(samples)) * 1000 // SAMPLE_RATE)
        )
        for i, value in enumerate(samples, start):
            mono[i] += value
        for other, mix in mixes.items():
            gain = 1.0 if other == speaker else bleed
            for i, value in enumerate(samples, start):
                mix[i] += gain * value

    def pcm(values: list[float]) -> bytes:
        return array("h", (max(-32768, min(32767, int(v))) for v in values)).tobytes()

    return Conversation(
        name=name,
        pcm=pcm(mono),
        reference=reference,
        channels=[pcm(mixes[s]) for s in order] if stereo else None,
    )


A, B, C, D = "en-us", "en-us+f3", "en-us+Demonic", "en-us+Alicia"

#: three voices, about 45 s, two stretches of overlapping speech
MEETING_3 = (
    Line("A", A, "Good morning everyone, let us start with the billing page launch."),
    Line("B", B, "The billing page is ready for review, and we plan to ship it on Friday."),
    Line("C", C, "Support needs training on the new invoices before that happens."),
    Line("A", A, "Who can run the training session this week?", 0.8),
    Line("C", C, "I can run it on Wednesday afternoon.", 0.5),
    Line("B", B, "Then I will update the pricing documentation on Tuesday.", -0.8),
    Line("A", A, "Great, and do we need a feature flag for the rollout?", 0.7),
    Line("B", B, "Yes, a feature flag keeps the old page for one more week."),
    Line("C", C, "Agreed, and I will watch the support queue after the launch.", -1.0),
    Line("A", A, "Thank you all, let us meet again next Monday at ten.", 0.8),
)

#: four voices, about 60 s, with overlaps
MEETING_4 = (
    *MEETING_3[:5],
    Line("D", D, "Before we close, the database migration is scheduled for Thursday night."),
    *MEETING_3[5:8],
    Line("D", D, "I will send the maintenance notice to every customer today.", 0.6),
    Line("C", C, "Please copy the support team on that notice.", -0.6),
    MEETING_3[9],
)

#: two voices on two channels (an interview with a microphone each), one overlap
INTERVIEW = (
    Line("A", A, "Thanks for joining us today, could you introduce yourself?"),
    Line("B", B, "Of course, I lead the payments team and I have been here for six years."),
    Line("A", A, "What was the hardest project your team shipped this year?", 0.7),
    Line("B", B, "The new invoice system, because every customer had a different contract.", 0.5),
    Line("A", A, "And how did you test it?", -0.5),
    Line("B", B, "We replayed a month of real invoices against both systems and compared them."),
)


@functools.cache
def _built(name: str) -> Conversation:
    scripts = {"meeting3": MEETING_3, "meeting4": MEETING_4}
    if name == "interview":
        return conversation(name, INTERVIEW, stereo=True)
    return conversation(name, scripts[name])


def _assert_well_formed(turns: list[Turn], duration_ms: int) -> None:
    assert all(isinstance(t, Turn) for t in turns)
    assert all(0 <= t.start_ms < t.end_ms <= duration_ms + 1 for t in turns), turns
    assert all(a.end_ms <= b.start_ms for a, b in pairwise(turns)), turns
    first_seen: list[str] = []
    for t in turns:
        if t.speaker not in first_seen:
            first_seen.append(t.speaker)
    assert first_seen == [str(i) for i in range(len(first_seen))], first_seen


class DiarizerContract:
    """Every diarizer must pass these (see the module's docstring)."""

    @pytest.fixture
    def meeting(self) -> Conversation:
        return _built("meeting3")

    @pytest.fixture
    def interview(self) -> Conversation:
        return _built("interview")

    async def test_three_voices_are_found_or_the_reason_given(
        self, diarizer: Diarizer, meeting: Conversation
    ) -> None:
        assert meeting.speakers == 3 and meeting.overlap_s > 1.0
        if not diarizer.available:
            reason = diarizer.unavailable_reason
            assert reason and "mcustt[diarization]" in reason
            with pytest.raises(DiarizationUnavailable) as raised:
                await diarizer.diarize(meeting.pcm)
            assert raised.value.message == reason
            assert raised.value.envelope()["error"]["code"] == "DIARIZATION_UNAVAILABLE"
            return
        assert diarizer.unavailable_reason is None
        turns = await diarizer.diarize(meeting.pcm)
        _assert_well_formed(turns, int(meeting.duration_s * 1000))
        assert len({t.speaker for t in turns}) == 3, turns
        score = diarization_error_rate(meeting.reference, turns, collar_ms=COLLAR_MS)
        assert score.der < MAX_DER, score

    async def test_silence_has_no_speakers(self, diarizer: Diarizer) -> None:
        silence = bytes(SAMPLE_RATE * 2 * 3)
        if diarizer.available:
            assert await diarizer.diarize(silence) == []
            assert await diarizer.diarize(b"") == []
        else:
            with pytest.raises(DiarizationUnavailable):
                await diarizer.diarize(silence)

    async def test_one_speaker_per_channel_needs_no_model(
        self, diarizer: Diarizer, interview: Conversation
    ) -> None:
        assert interview.channels is not None
        turns = await diarizer.diarize(interview.pcm, channels=interview.channels)
        _assert_well_formed(turns, int(interview.duration_s * 1000))
        assert {t.speaker for t in turns} == {"0", "1"}
        score = diarization_error_rate(interview.reference, turns, collar_ms=COLLAR_MS)
        assert score.der < 0.1, score
        assert score.mapping == {"0": "A", "1": "B"}

    async def test_the_same_sound_on_both_channels_is_mono(
        self, diarizer: Diarizer, meeting: Conversation
    ) -> None:
        both = [meeting.pcm, meeting.pcm]
        if diarizer.available:
            assert await diarizer.diarize(meeting.pcm, channels=both) == await diarizer.diarize(
                meeting.pcm
            )
        else:
            with pytest.raises(DiarizationUnavailable):
                await diarizer.diarize(meeting.pcm, channels=both)

    async def test_malformed_pcm_is_a_400(self, diarizer: Diarizer) -> None:
        with pytest.raises(BadRequest):
            await diarizer.diarize(b"\x00" * 3201)
        with pytest.raises(BadRequest):
            await diarizer.diarize(bytes(3200), channels=[bytes(3200), bytes(3202)])
        with pytest.raises(BadRequest):
            await diarizer.diarize(bytes(3200), channels=[bytes(3200), bytes(3201)])

    async def test_the_event_loop_keeps_running(
        self, diarizer: Diarizer, interview: Conversation
    ) -> None:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        caller = threading.get_ident()
        started = time.monotonic()
        try:
            await diarizer.diarize(interview.pcm, channels=interview.channels)
        finally:
            finished = time.monotonic()
            task.cancel()
        assert threading.get_ident() == caller
        assert any(started < t < finished for t in ticks), "the loop was blocked"

    async def test_concurrent_calls_agree(
        self, diarizer: Diarizer, interview: Conversation, meeting: Conversation
    ) -> None:
        calls = [
            diarizer.diarize(interview.pcm, channels=interview.channels),
            diarizer.diarize(interview.pcm, channels=interview.channels),
        ]
        if diarizer.available:
            calls += [diarizer.diarize(meeting.pcm), diarizer.diarize(meeting.pcm)]
        results = await asyncio.gather(*calls)
        assert results[0] == results[1]
        if diarizer.available:
            assert results[2] == results[3]

    async def test_aclose_twice(self, diarizer: Diarizer) -> None:
        await diarizer.aclose()
        await diarizer.aclose()
