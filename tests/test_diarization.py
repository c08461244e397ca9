"""Speaker diarization (issue 15): choosing the diarizer, the error rate we measure it
with, stereo files split by channel, and resemblyzer's behaviour on the synthetic
multi-voice recordings (``mcustt.testing.diarizer``; the seam's contract is in
``test_contract_diarizers.py``)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import threading
import time
import wave
from array import array
from pathlib import Path
from typing import Any

import pytest
from conftest import need_service

from mcustt.config import ConfigError, Settings
from mcustt.diarization import (
    DiarizationError,
    DiarizationUnavailable,
    Diarizer,
    Turn,
    extra_installed,
    load_diarizer,
    normalize_turns,
    speaker_at,
)
from mcustt.diarization.channels import channel_turns
from mcustt.diarization.der import diarization_error_rate
from mcustt.diarization.none import NoDiarizer
from mcustt.testing.diarizer import COLLAR_MS, MEETING_3, Conversation, conversation

FIXTURES = Path(__file__).parent / "fixtures"


# -- choosing a diarizer ---------------------------------------------------------------


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "MCUSTT_DIARIZER": "none",
            "MCUSTT_DIARIZATION_THRESHOLD": "0.8",
            "MCUSTT_DIARIZATION_MAX_SPEAKERS": "4",
            "MCUSTT_DIARIZATION_CONCURRENCY": "2",
        }
    )
    assert settings.diarizer == "none"
    assert settings.diarization_threshold == 0.8
    assert settings.diarization_max_speakers == 4
    assert settings.diarization_concurrency == 2
    assert isinstance(load_diarizer(settings), NoDiarizer)
    for bad in (
        {"MCUSTT_DIARIZATION_THRESHOLD": "1.5"},
        {"MCUSTT_DIARIZATION_MAX_SPEAKERS": "0"},
        {"MCUSTT_DIARIZATION_CONCURRENCY": "0"},
    ):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)


def test_an_unknown_diarizer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown diarizer 'pyannote'"):
        load_diarizer(Settings(diarizer="pyannote"))


def test_auto_is_resemblyzer_only_when_the_extra_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auto = Settings()
    assert auto.diarizer == "auto"
    expected = "resemblyzer" if extra_installed() else "none"
    assert load_diarizer(auto).name == expected
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert not extra_installed()
    assert load_diarizer(auto).name == "none"
    # Asked for by name on a node without the extra: it says so instead of pretending.
    named = load_diarizer(Settings(diarizer="resemblyzer"))
    assert named.name == "resemblyzer"
    assert not named.available
    assert "mcustt[diarization]" in (named.unavailable_reason or "")


async def test_without_the_extra_mono_audio_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    diarizer = load_diarizer(Settings(diarizer="resemblyzer"))
    with pytest.raises(DiarizationUnavailable, match=r"mcustt\[diarization\]") as raised:
        await diarizer.diarize(bytes(32000))
    assert raised.value.status_code == 503


# -- turns ---------------------------------------------------------------------------


def test_turns_are_sorted_merged_and_renamed_in_order_of_speech() -> None:
    turns = normalize_turns(
        [
            Turn("b", 5000, 6000),
            Turn("a", 0, 1000),
            Turn("a", 1000, 2000),  # touches the previous one: merged
            Turn("b", 1500, 3000),  # overlaps: starts when a's turn ends
            Turn("c", 7000, 7000),  # empty: dropped
        ]
    )
    assert turns == [Turn("0", 0, 2000), Turn("1", 2000, 3000), Turn("1", 5000, 6000)]


def test_an_utterance_goes_to_the_speaker_it_overlaps_most() -> None:
    turns = [Turn("0", 0, 3000), Turn("1", 3000, 5000), Turn("0", 8000, 9000)]
    assert speaker_at(turns, 2500, 4500) == "1"  # 1500 ms of "1", 500 of "0"
    assert speaker_at(turns, 100, 3200) == "0"
    assert speaker_at(turns, 5500, 6000) == "1"  # in a pause: the nearest turn
    assert speaker_at(turns, 7500, 7700) == "0"
    assert speaker_at([], 0, 1000) is None


# -- the error rate ------------------------------------------------------------------


def test_der_is_zero_for_the_reference_whatever_the_names() -> None:
    reference = [Turn("A", 0, 2000), Turn("B", 2000, 5000), Turn("A", 5000, 6000)]
    renamed = [Turn("1", 0, 2000), Turn("0", 2000, 5000), Turn("1", 5000, 6000)]
    score = diarization_error_rate(reference, renamed)
    assert score.der == 0.0
    assert score.mapping == {"1": "A", "0": "B"}
    assert score.total_s == pytest.approx(6.0)


def test_der_counts_missed_false_alarm_and_confusion() -> None:
    reference = [Turn("A", 0, 4000), Turn("B", 4000, 8000)]
    # 0-1 s missed, 1-4 s right, 4-6 s given to A (confusion), 6-8 s right,
    # 8-9 s false alarm.
    hypothesis = [Turn("x", 1000, 6000), Turn("y", 6000, 9000)]
    score = diarization_error_rate(reference, hypothesis)
    assert score.missed_s == pytest.approx(1.0)
    assert score.confusion_s == pytest.approx(2.0)
    assert score.false_alarm_s == pytest.approx(1.0)
    assert score.der == pytest.approx(4.0 / 8.0)
    # One speaker for everything: half the speech is confused.
    assert diarization_error_rate(reference, [Turn("x", 0, 8000)]).der == pytest.approx(0.5)
    assert diarization_error_rate(reference, []).der == pytest.approx(1.0)


def test_der_counts_overlapping_reference_speech_per_speaker() -> None:
    reference = [Turn("A", 0, 3000), Turn("B", 2000, 4000)]  # 1 s of overlap
    single = [Turn("x", 0, 3000), Turn("y", 3000, 4000)]
    score = diarization_error_rate(reference, single)
    assert score.total_s == pytest.approx(5.0)
    assert score.missed_s == pytest.approx(1.0)  # B's overlapped second
    assert score.der == pytest.approx(0.2)


def test_the_collar_forgives_boundaries() -> None:
    reference = [Turn("A", 0, 2000), Turn("B", 2000, 4000)]
    late = [Turn("x", 0, 2200), Turn("y", 2200, 4000)]
    assert diarization_error_rate(reference, late).der == pytest.approx(0.05)
    assert diarization_error_rate(reference, late, collar_ms=250).der == 0.0


# -- stereo: one speaker per channel -------------------------------------------------


def test_channels_with_the_same_sound_are_not_speakers() -> None:
    mono = conversation("two", MEETING_3[:2]).pcm
    assert channel_turns([mono, mono]) is None
    quieter = array("h", mono)
    for i, v in enumerate(quieter):
        quieter[i] = v // 2  # the same sound 6 dB down in one channel: still one mix
    assert channel_turns([mono, quieter.tobytes()]) is None
    hiss = array("h", [3, -3] * 16000).tobytes()
    assert channel_turns([bytes(64000), hiss]) == []  # nobody speaks


async def test_a_stereo_call_is_split_by_channel_even_without_a_model() -> None:
    interview = conversation("interview", MEETING_3[:4], stereo=True)
    assert interview.channels is not None and len(interview.channels) == 3
    turns = await NoDiarizer(Settings()).diarize(interview.pcm, channels=interview.channels)
    assert {t.speaker for t in turns} == {"0", "1", "2"}
    score = diarization_error_rate(interview.reference, turns, collar_ms=COLLAR_MS)
    assert score.der < 0.1, score


# -- resemblyzer ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meeting() -> Conversation:
    return conversation("meeting3", MEETING_3)


@pytest.fixture
def resemblyzer() -> Diarizer:
    if not extra_installed():
        need_service("mcustt[diarization]", "scripts/install --test installs the extra")
    return load_diarizer(Settings(diarizer="resemblyzer"))


def _standup() -> tuple[bytes, list[Turn]]:
    with wave.open(str(FIXTURES / "standup_en.wav")) as w:
        pcm = w.readframes(w.getnframes())
    turns = json.loads((FIXTURES / "standup_en.json").read_text())["turns"]
    return pcm, [
        Turn(t["speaker"], round(t["start_s"] * 1000), round(t["end_s"] * 1000)) for t in turns
    ]


async def test_the_two_voices_of_the_standup_fixture(resemblyzer: Diarizer) -> None:
    pcm, reference = _standup()
    turns = await resemblyzer.diarize(pcm)
    assert len({t.speaker for t in turns}) == 2
    score = diarization_error_rate(reference, turns, collar_ms=COLLAR_MS)
    # measured 0.002: each of the seven turns is found with its speaker
    assert score.der < 0.1, score
    # every line of the fixture lands on one speaker, alternating as in the meeting
    speakers = [speaker_at(turns, r.start_ms, r.end_ms) for r in reference]
    assert speakers == ["0", "1", "0", "1", "0", "1", "0"]


async def test_the_speaker_count_follows_the_settings(
    resemblyzer: Diarizer, meeting: Conversation
) -> None:
    capped = load_diarizer(Settings(diarizer="resemblyzer", diarization_max_speakers=2))
    assert len({t.speaker for t in await capped.diarize(meeting.pcm)}) == 2
    lenient = load_diarizer(Settings(diarizer="resemblyzer", diarization_threshold=0.3))
    assert {t.speaker for t in await lenient.diarize(meeting.pcm)} == {"0"}


async def test_long_files_cluster_a_sample(
    resemblyzer: Diarizer, meeting: Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcustt.diarization import clustering  # needs the extra's numpy and scipy

    monkeypatch.setattr(clustering, "MAX_CLUSTERED", 20)
    turns = await resemblyzer.diarize(meeting.pcm)
    assert len({t.speaker for t in turns}) == 3
    score = diarization_error_rate(meeting.reference, turns, collar_ms=COLLAR_MS)
    assert score.der < 0.25, score


def test_the_model_loads_once_when_threads_race(
    resemblyzer: Diarizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcustt.diarization import embedding  # needs the extra
    from mcustt.diarization import resemblyzer as module  # the module, not the fixture

    loads: list[int] = []

    def slow_load() -> object:
        loads.append(threading.get_ident())
        time.sleep(0.05)
        return object()

    monkeypatch.setattr(module, "_encoder", None)
    monkeypatch.setattr(embedding, "new_encoder", slow_load)
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(module.load_encoder())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    assert len(got) == 4 and all(g is got[0] for g in got)


async def test_a_model_that_fails_to_load_is_reported(
    resemblyzer: Diarizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcustt.diarization import embedding  # needs the extra
    from mcustt.diarization import resemblyzer as module  # the module, not the fixture

    def broken() -> object:
        raise OSError("pretrained.pt: unexpected end of file")

    monkeypatch.setattr(module, "_encoder", None)
    monkeypatch.setattr(module, "_load_error", None)
    monkeypatch.setattr(embedding, "new_encoder", broken)
    with pytest.raises(DiarizationUnavailable, match="unexpected end of file"):
        await resemblyzer.diarize(bytes(64000))
    assert not resemblyzer.available
    assert "could not be loaded" in (resemblyzer.unavailable_reason or "")


async def test_a_failure_on_a_file_is_a_diarization_error(
    resemblyzer: Diarizer, meeting: Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcustt.diarization import embedding  # needs the extra

    def fail(*args: object) -> object:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(embedding, "embed_windows", fail)
    with pytest.raises(DiarizationError, match="out of memory") as raised:
        await resemblyzer.diarize(meeting.pcm)
    assert raised.value.envelope()["error"]["code"] == "DIARIZATION_FAILED"


def test_the_mel_spectrogram_is_librosas(resemblyzer: Diarizer) -> None:
    """The encoder's input, computed with NumPy, equals librosa's melspectrogram (what
    resemblyzer feeds it), here checked against torch.stft with librosa's conventions:
    centred frames, zero padding, periodic Hann window, power 2, Slaney mel bands."""
    import numpy as np  # the extra's
    import torch

    from mcustt.diarization import embedding  # needs the extra
    from mcustt.diarization.resemblyzer import load_encoder  # needs the extra

    encoder = load_encoder()
    wav = (np.random.default_rng(7).standard_normal(24000) * 0.1).astype(np.float32)
    ours = embedding.mel_spectrogram(encoder, wav)
    spectrum = torch.stft(
        torch.from_numpy(wav),
        n_fft=400,
        hop_length=160,
        window=torch.hann_window(400, periodic=True),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = (spectrum.abs() ** 2).numpy()
    reference = (encoder.mel_basis @ power).T
    assert ours.shape == (151, 40)
    assert np.allclose(ours, reference, rtol=1e-4, atol=1e-6)


def test_nothing_is_downloaded_at_run_time(resemblyzer: Diarizer, tmp_path: Path) -> None:
    """The model loads and embeds with every network connection refused."""
    script = tmp_path / "offline.py"
    script.write_text(
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise OSError('network access attempted')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from mcustt.diarization.resemblyzer import load_encoder\n"
        "from mcustt.diarization.embedding import embed_windows\n"
        "e = embed_windows(load_encoder(), bytes(48000), [(0, 24000)])\n"
        "print(e.shape)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 256)"


async def test_diarizing_does_not_stop_the_event_loop(
    resemblyzer: Diarizer, meeting: Conversation
) -> None:
    await resemblyzer.diarize(meeting.pcm[: 16000 * 2 * 2])  # load the model first
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await resemblyzer.diarize(meeting.pcm[: 16000 * 2 * 12])
    task.cancel()
    assert ticks > before
