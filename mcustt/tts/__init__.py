"""Text-to-speech engines by registry name (``MCUSTT_TTS``)."""

from __future__ import annotations

from mcustt.config import Settings
from mcustt.importer import resolve
from mcustt.tts.base import FORMAT, Synthesizer, TTSError, TTSUnavailable, UnknownVoice

SYNTHESIZERS = {
    "espeak": "mcustt.tts.espeak:EspeakSynthesizer",
    "openai": "mcustt.tts.openai:OpenAISynthesizer",
}

__all__ = [
    "FORMAT",
    "SYNTHESIZERS",
    "Synthesizer",
    "TTSError",
    "TTSUnavailable",
    "UnknownVoice",
    "load_synthesizer",
]


def load_synthesizer(settings: Settings) -> Synthesizer:
    cls = resolve(SYNTHESIZERS, settings.tts, "text-to-speech engine")
    synthesizer: Synthesizer = cls(settings)
    return synthesizer
