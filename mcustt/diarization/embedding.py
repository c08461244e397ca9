"""Speech windows and their voice embeddings (resemblyzer's encoder, NumPy, torch).

Imported only by :mod:`mcustt.diarization.resemblyzer`, on the first mono file, when
the extra is installed (torch, resemblyzer and librosa load here: seconds, once).
The mel spectrogram is computed here with NumPy, the same as resemblyzer's
``wav_to_mel_spectrogram`` (librosa's: 25 ms Hann window, 10 ms hop, 40 Slaney mel
bands, power 2; ``tests/test_diarization.py`` checks they agree), because librosa's
own compiles with numba on the first call of every process (seconds) and allocates
per call. Each window is converted on its own, so memory stays at one batch of
windows whatever the length of the file (the PCM itself is read in place).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

with warnings.catch_warnings():
    # resemblyzer imports scipy.ndimage.morphology, deprecated in SciPy 1.x.
    warnings.simplefilter("ignore", DeprecationWarning)
    import librosa.filters
    from resemblyzer import VoiceEncoder

from mcustt.diarization.channels import FRAME_MS, voiced_frames
from mcustt.types import SAMPLE_RATE

WINDOW_S = 1.5
HOP_S = 0.75
WINDOW = int(WINDOW_S * SAMPLE_RATE)
HOP = int(HOP_S * SAMPLE_RATE)
FRAME = SAMPLE_RATE * FRAME_MS // 1000
#: pauses this short inside speech are bridged (VAD flicker, breaths)
BRIDGE_FRAMES = 300 // FRAME_MS
#: speech regions shorter than this are not speech (clicks, coughs)
MIN_REGION_FRAMES = 240 // FRAME_MS
#: windows per forward pass
BATCH = 64
_N_FFT = 400  # 25 ms
_MEL_HOP = 160  # 10 ms
_TARGET_DBFS = -30.0  # resemblyzer's audio_norm_target_dBFS

Floats = npt.NDArray[np.float32]
Window = tuple[int, int]  # [start, end) in samples


class Encoder:
    """resemblyzer's ``VoiceEncoder`` with the mel filter bank it expects."""

    def __init__(self, model: Any, mel_basis: Floats) -> None:
        self.model = model
        self.mel_basis = mel_basis
        self.hann = np.hanning(_N_FFT + 1)[:-1].astype(np.float32)  # periodic, as librosa


def new_encoder() -> Encoder:
    """Load the encoder from the weights inside the resemblyzer wheel (no download)."""
    # One core per file: MCUSTT_DIARIZATION_CONCURRENCY says how many run at once,
    # and torch's own thread pool, fighting other work on a busy node, is far slower
    # (measured: 1.4 s instead of 0.06 s for 12 windows on a loaded 2-core machine).
    torch.set_num_threads(1)
    model = VoiceEncoder("cpu", verbose=False).eval()
    mel_basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=_N_FFT, n_mels=40).astype(np.float32)
    return Encoder(model, mel_basis)


def speech_frames(pcm: bytes, vad_aggressiveness: int) -> npt.NDArray[np.bool_]:
    """Per 30 ms frame, speech or not: webrtcvad, pauses under 0.3 s bridged and
    regions under 0.24 s dropped."""
    flags = np.array(voiced_frames(pcm, vad_aggressiveness), dtype=bool)
    if not flags.any():
        return flags
    out = flags.copy()
    for start, end in _runs(~flags):
        if start > 0 and end < len(flags) and end - start <= BRIDGE_FRAMES:
            out[start:end] = True
    for start, end in _runs(out):
        if end - start < MIN_REGION_FRAMES:
            out[start:end] = False
    return out


def _runs(flags: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate(([False], flags, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def speech_windows(
    pcm: bytes, vad_aggressiveness: int
) -> tuple[npt.NDArray[np.bool_], list[Window]]:
    """The speech frames, and the windows to embed: every 0.75 s over each speech
    region, 1.5 s long (the last one ending at the region's end); a region shorter than
    a window gets one window centred on it."""
    frames = speech_frames(pcm, vad_aggressiveness)
    n_samples = len(pcm) // 2
    windows: list[Window] = []
    for first, end in _runs(frames):
        start, stop = first * FRAME, end * FRAME
        if stop - start <= WINDOW:
            middle = (start + stop) // 2
            lo = max(0, min(middle - WINDOW // 2, n_samples - WINDOW))
            windows.append((lo, lo + WINDOW))
            continue
        at = start
        while at + WINDOW < stop:
            windows.append((at, at + WINDOW))
            at += HOP
        windows.append((stop - WINDOW, stop))
    return frames, windows


def mel_spectrogram(encoder: Encoder, wav: Floats) -> Floats:
    """librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160,
    n_mels=40).T, as resemblyzer computes it (centred frames, zero padding)."""
    padded = np.pad(wav, (_N_FFT // 2, _N_FFT // 2))
    n = 1 + (len(padded) - _N_FFT) // _MEL_HOP
    index = np.arange(_N_FFT)[None, :] + _MEL_HOP * np.arange(n)[:, None]
    spectrum = np.abs(np.fft.rfft(padded[index] * encoder.hann, axis=1)) ** 2
    mel: Floats = (spectrum @ encoder.mel_basis.T).astype(np.float32)
    return mel


def _normalized(wav: Floats) -> Floats:
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    if rms < 1e-5:
        return wav
    gain = 10 ** (_TARGET_DBFS / 20) / rms
    return (wav * gain).astype(np.float32)


def embed_windows(encoder: Encoder, pcm: bytes, windows: list[Window]) -> Floats:
    """One L2-normed 256-dimension embedding per window (rows), in batches."""
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
    out: list[Floats] = []
    for at in range(0, len(windows), BATCH):
        mels = []
        for start, end in windows[at : at + BATCH]:
            wav = samples[max(0, start) : end].astype(np.float32) / 32768.0
            if len(wav) < WINDOW:  # a file shorter than one window
                wav = np.pad(wav, (0, WINDOW - len(wav)))
            mels.append(mel_spectrogram(encoder, _normalized(wav)))
        with torch.inference_mode():
            batch = encoder.model(torch.from_numpy(np.stack(mels)))
        out.append(batch.numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 256), dtype=np.float32)
