"""Recognizers by registry name (``MCUSTT_RECOGNIZER``)."""

from __future__ import annotations

from mcustt.config import Settings
from mcustt.importer import resolve
from mcustt.recognizers.base import (
    Hypothesis,
    Recognizer,
    RecognizerError,
    RecognizerStream,
    Word,
)

RECOGNIZERS = {
    "sphinx": "mcustt.recognizers.sphinx:SphinxRecognizer",
    "google": "mcustt.recognizers.google:GoogleRecognizer",
    "null": "mcustt.recognizers.null:NullRecognizer",
}

__all__ = [
    "RECOGNIZERS",
    "Hypothesis",
    "Recognizer",
    "RecognizerError",
    "RecognizerStream",
    "Word",
    "load_recognizer",
]


def load_recognizer(settings: Settings) -> Recognizer:
    cls = resolve(RECOGNIZERS, settings.recognizer, "recognizer")
    recognizer: Recognizer = cls(settings)
    return recognizer
