"""Summarizers by registry name (``MCUSTT_SUMMARIZER``)."""

from __future__ import annotations

from mcustt.config import Settings
from mcustt.importer import resolve
from mcustt.summarizers.base import (
    ActionItem,
    Answer,
    Citation,
    Document,
    Line,
    Summarizer,
    SummarizerError,
    SummarizerUnavailable,
    SummaryContent,
    SummaryResult,
)

SUMMARIZERS = {
    "extractive": "mcustt.summarizers.extractive:ExtractiveSummarizer",
    "openai": "mcustt.summarizers.openai:OpenAISummarizer",
}

__all__ = [
    "SUMMARIZERS",
    "ActionItem",
    "Answer",
    "Citation",
    "Document",
    "Line",
    "Summarizer",
    "SummarizerError",
    "SummarizerUnavailable",
    "SummaryContent",
    "SummaryResult",
    "load_summarizer",
]


def load_summarizer(settings: Settings) -> Summarizer:
    cls = resolve(SUMMARIZERS, settings.summarizer, "summarizer")
    summarizer: Summarizer = cls(settings)
    return summarizer
