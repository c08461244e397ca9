"""Word timings of finals (issue 17): from an engine's words to the wire, and back.

A recognizer gives :class:`mcustt.recognizers.base.Word` objects with offsets relative
to its stream (one utterance); the pipeline moves them to session time with
:func:`session_words` and stores them on the transcript line in the wire's shape
(:class:`mcustt.wire.WordTiming`). Readers get them back with :func:`line_words`,
which keeps them consistent with a corrected line's text.

Who gets them: every final's event carries ``startMs``/``endMs``/``confidence``; its
``words`` go to connections that asked (``?words=1``) or to every viewer of a session
created with ``words: true`` (:func:`wants_words`), and always to the transcript json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from mcustt.errors import BadRequest
from mcustt.recognizers.base import Word
from mcustt.store.models import TranscriptLine
from mcustt.wire import WordTiming

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def wants_words(raw: str | None, *, session_default: bool = False, strict: bool = True) -> bool:
    """A connection's ``?words=`` (``1``/``true``/``yes`` or ``0``/``false``/``no``);
    a session created with ``words: true`` gives them to every connection.

    Raises:
        BadRequest: any other value, when ``strict`` (checked before the stream starts;
            not strict: such a value asks for nothing).
    """
    if raw is None:
        return session_default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE or not strict:
        return session_default
    raise BadRequest("words must be 1 or 0 (true or false)")


def clamp_confidence(value: float | None) -> float | None:
    """An engine's confidence as stored and sent: 0 to 1, 4 decimals (None: none)."""
    if value is None or value != value:  # NaN is no confidence at all
        return None
    return round(min(max(float(value), 0.0), 1.0), 4)


def session_words(
    words: Sequence[Word] | None, offset_ms: int, start_ms: int, end_ms: int
) -> list[WordTiming] | None:
    """An engine's words (stream offsets) in session time, as the wire has them.

    ``offset_ms`` is where the stream's first byte lies in the session; the words are
    kept inside the final's ``[start_ms, end_ms]`` and in order (each starts at or after
    the previous one's start, and ends at or after its own start), so a reader can rely
    on that whatever the engine rounded. Words without text are dropped. None: the
    engine gave no words.
    """
    if words is None:
        return None
    out: list[WordTiming] = []
    prev_start = start_ms
    for word in words:
        text = " ".join(word.text.split())
        if not text:
            continue
        start = min(max(offset_ms + word.start_ms, prev_start), end_ms)
        end = min(max(offset_ms + word.end_ms, start), end_ms)
        out.append(
            {
                "text": text,
                "startMs": start,
                "endMs": end,
                "confidence": clamp_confidence(word.confidence),
            }
        )
        prev_start = start
    return out


def _stored(raw: Any) -> list[WordTiming] | None:
    """A line's stored ``words`` column, checked (a JSON column may hold anything an
    older or foreign writer put there: such a line reads as having no timings)."""
    if not isinstance(raw, list):
        return None
    out: list[WordTiming] = []
    for item in raw:
        if not isinstance(item, Mapping):
            return None
        text, start, end = item.get("text"), item.get("startMs"), item.get("endMs")
        conf = item.get("confidence")
        if (
            not isinstance(text, str)
            or not isinstance(start, int)
            or not isinstance(end, int)
            or not (conf is None or isinstance(conf, int | float))
        ):
            return None
        out.append({"text": text, "startMs": start, "endMs": end, "confidence": conf})
    return out


def line_words(line: TranscriptLine) -> list[WordTiming] | None:
    """The word timings of a line as readers see it (None: it has none).

    A corrected line (issue 16, ``text`` is its correction) keeps its timings when the
    correction has as many words as the recognized text (a fixed spelling, a name):
    each timing then shows the corrected word. A correction that adds or drops words
    has no honest timings per word: None (subtitles interpolate over the line).
    """
    words = _stored(line.words)
    if words is None:
        return None
    if line.revised_text is None:
        return words
    tokens = line.text.split()
    if len(tokens) != len(words):
        return None
    return [
        cast(WordTiming, {**word, "text": token}) for word, token in zip(words, tokens, strict=True)
    ]
