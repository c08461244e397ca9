"""No speaker model on this node: mono files get no speakers, and say why.

Stereo files with one speaker per channel are still split (that needs no model: see
:mod:`mcustt.diarization.channels`).
"""

from __future__ import annotations

from mcustt.diarization.base import DiarizationUnavailable, Diarizer, Turn

#: what a response says when it has no speakers for this reason
REASON = (
    "speaker diarization is not installed on this server: "
    "install mcustt[diarization] (torch==2.13.0 first) and set MCUSTT_DIARIZER=auto"
)


class NoDiarizer(Diarizer):
    name = "none"

    @property
    def available(self) -> bool:
        return False

    @property
    def unavailable_reason(self) -> str:
        return REASON

    def diarize_sync(self, pcm16_16k: bytes) -> list[Turn]:
        raise DiarizationUnavailable(REASON)
