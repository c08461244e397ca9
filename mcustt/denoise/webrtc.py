"""WebRTC's noise suppressor (the one in every browser's getUserMedia pipeline), from the
``webrtc-noise-gain`` wheel: the C++ audio-processing module, statically linked, no
model file to fetch, 16 kHz native in 10 ms frames. Measured at well under 1 % of one
core per live stream (README, "Noise reduction")."""

from __future__ import annotations

from typing import ClassVar, Final

from webrtc_noise_gain import AudioProcessor

from mcustt.denoise.base import NoiseSuppressor
from mcustt.types import BYTES_PER_MS

#: The wheel's suppression level, 1 (low) .. 4 (very high); 0 would be off. 3 ("high")
#: measured as good as 4 on the noisy fixtures (VAD misses, WER) and it keeps more of
#: quiet speech.
LEVEL: Final = 3
#: automatic gain control off: the recognizers normalize themselves, and AGC would
#: pump the noise floor back up between words
AUTO_GAIN: Final = 0


class WebRtcSuppressor(NoiseSuppressor):
    name: ClassVar[str] = "webrtc"
    frame_bytes: ClassVar[int] = 10 * BYTES_PER_MS  # 320: the module's 10 ms frame
    #: 96 samples (6 ms): the suppressor's analysis window overlaps the previous frame
    #: by that much (measured: the output correlates with the clean speech at that lag)
    engine_delay_bytes: ClassVar[int] = 96 * 2

    def __init__(self, level: int = LEVEL) -> None:
        super().__init__()
        self._level = level
        self._apm = AudioProcessor(AUTO_GAIN, level)

    def _frame(self, frame: bytes) -> bytes:
        out: bytes = self._apm.Process10ms(frame).audio
        return out

    def _reset(self) -> None:
        self._apm = AudioProcessor(AUTO_GAIN, self._level)
