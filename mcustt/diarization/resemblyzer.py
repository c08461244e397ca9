"""Diarization with resemblyzer's speaker encoder (the ``mcustt[diarization]`` extra).

The model is the GE2E speaker encoder whose weights ship inside the ``resemblyzer``
wheel (``pretrained.pt``, 17 MB): nothing is downloaded at run time. It runs on the CPU
with PyTorch (``torch==2.13.0``, the CPU build), one thread per file.

How a file is split (:mod:`mcustt.diarization.embedding` and
:mod:`mcustt.diarization.clustering`):

1. speech regions from webrtcvad (30 ms frames); silence is never embedded;
2. a 1.5 s window every 0.75 s over each region (a shorter region: one 1.5 s window
   centred on it), each window's loudness normalized, and one 256-dimension voice
   embedding per window;
3. clustering with no speaker count given (:func:`~mcustt.diarization.clustering.cluster`):
   average-linkage agglomerative clustering on cosine similarity splits the windows
   into small clusters of one voice each; then the two clusters whose mean voices are
   most alike merge, while they are more alike than ``MCUSTT_DIARIZATION_THRESHOLD``
   (0.78), so the number of speakers is found, not given (at most
   ``MCUSTT_DIARIZATION_MAX_SPEAKERS``); a cluster of a single window (or under 1 %
   of the windows: moments of two voices at once) is folded into the nearest real
   one; long files cluster a sample of 1500 windows and give every window its nearest
   speaker;
4. each speech frame takes the speaker of the nearest window centre; runs shorter
   than 0.5 s between the same speaker's are absorbed, and pauses under 0.3 s bridged.

Overlapping speech goes to the dominant voice: a window holding two voices embeds
closer to the louder one, so turns never overlap (a documented simplification: the
overlapped seconds of the quieter voice count as missed speech in the error rate).

The model is loaded once per process, on the first mono file, under a lock (two
threads asking at once load it once); :attr:`ResemblyzerDiarizer.available` is false,
with the reason, when the packages are missing or the model failed to load.
"""

from __future__ import annotations

import threading
from typing import Any

from mcustt.diarization.base import DiarizationUnavailable, Diarizer, Turn, extra_installed

_lock = threading.Lock()
_encoder: Any = None
_load_error: str | None = None


def load_encoder() -> Any:
    """The process's one resemblyzer ``VoiceEncoder`` (loaded on first call).

    Raises:
        DiarizationUnavailable: the extra is missing or the weights do not load.
    """
    global _encoder, _load_error
    with _lock:
        if _encoder is None and _load_error is None:
            try:
                # Imported here, not at module level: torch takes seconds and hundreds
                # of MB, and only nodes that diarize a mono file need it.
                from mcustt.diarization.embedding import new_encoder

                _encoder = new_encoder()
            except Exception as exc:
                _load_error = f"the resemblyzer speaker model could not be loaded: {exc}"
        if _encoder is None:
            raise DiarizationUnavailable(_load_error or "the speaker model is unavailable")
        return _encoder


class ResemblyzerDiarizer(Diarizer):
    name = "resemblyzer"

    @property
    def available(self) -> bool:
        # Finding the packages is cheap; importing them is left to the first file.
        # A model that failed to load stays unavailable for the process's life.
        return _load_error is None and extra_installed()

    @property
    def unavailable_reason(self) -> str | None:
        if self.available:
            return None
        return _load_error or (
            "speaker diarization needs the mcustt[diarization] extra "
            "(torch==2.13.0 and resemblyzer), which is not installed"
        )

    def diarize_sync(self, pcm16_16k: bytes) -> list[Turn]:
        encoder = load_encoder()
        # numpy and scipy come with the extra; see load_encoder for why this is lazy.
        from mcustt.diarization.clustering import cluster, label_frames  # lazy: see above
        from mcustt.diarization.embedding import embed_windows, speech_windows  # lazy too

        frames, windows = speech_windows(pcm16_16k, self.settings.vad_aggressiveness)
        if not windows:
            return []
        embeddings = embed_windows(encoder, pcm16_16k, windows)
        labels = cluster(
            embeddings,
            threshold=self.settings.diarization_threshold,
            max_speakers=self.settings.diarization_max_speakers,
        )
        return [
            Turn(str(speaker), start, end)
            for speaker, start, end in label_frames(frames, windows, labels)
        ]
