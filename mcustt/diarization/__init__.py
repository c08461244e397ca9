"""Speaker diarization by registry name (``MCUSTT_DIARIZER``).

``auto`` (the default) is ``resemblyzer`` when the ``mcustt[diarization]`` extra is
installed (the ``resemblyzer`` and ``torch`` packages are found), else ``none``.
Finding them does not import them: torch loads on the first mono file.
"""

from __future__ import annotations

from mcustt.config import Settings
from mcustt.diarization.base import (
    DiarizationError,
    DiarizationUnavailable,
    Diarizer,
    Turn,
    extra_installed,
    normalize_turns,
    speaker_at,
)
from mcustt.importer import resolve
from mcustt.types import SAMPLE_RATE

DIARIZERS = {
    "resemblyzer": "mcustt.diarization.resemblyzer:ResemblyzerDiarizer",
    "none": "mcustt.diarization.none:NoDiarizer",
}

__all__ = [
    "DIARIZERS",
    "SAMPLE_RATE",
    "DiarizationError",
    "DiarizationUnavailable",
    "Diarizer",
    "Turn",
    "extra_installed",
    "load_diarizer",
    "normalize_turns",
    "speaker_at",
]


def load_diarizer(settings: Settings) -> Diarizer:
    name = settings.diarizer
    if name == "auto":
        name = "resemblyzer" if extra_installed() else "none"
    cls = resolve(DIARIZERS, name, "diarizer")
    diarizer: Diarizer = cls(settings)
    return diarizer
