"""Wire events (§5 server → client): their builders, and their once-per-node parsed form.

The shapes are :mod:`mcustt.wire`'s; the builders here are the only place the server
makes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from mcustt.store.models import TranscriptLine
from mcustt.wire import (
    ChannelMessage,
    ErrorEvent,
    LanguageEvent,
    PongEvent,
    ProducerEvent,
    SessionEndEvent,
    Speaker,
    SpeakerEvent,
    StopControl,
    TranscriptEvent,
    WordTiming,
)
from mcustt.words import line_words


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def transcript(
    *, seq: int, text: str, is_final: bool, lang: str, ts: int, speaker: Speaker | None = None
) -> TranscriptEvent:
    """``speaker``: the participant of the track (absent for the mixed producer)."""
    event: TranscriptEvent = {
        "type": "transcript",
        "text": text,
        "isFinal": is_final,
        "seq": seq,
        "lang": lang,
        "ts": ts,
    }
    if speaker is not None:
        event["speaker"] = speaker
    return event


def line_event(line: TranscriptLine, names: Mapping[str, str] | None = None) -> TranscriptEvent:
    """A persisted final as a viewer gets it on replay; ``names``: the session's speaker
    names (:meth:`mcustt.store.repo.Repo.speaker_names`), for a line of a participant's
    track (an unnamed speaker is called by its id)."""
    event = transcript(seq=line.seq, text=line.text, is_final=True, lang=line.lang, ts=line.ts)
    if line.speaker:
        event["speaker"] = speaker(line.speaker, (names or {}).get(line.speaker, line.speaker))
    # issue 17: the same fields as the live final (replay must not differ from live)
    return timed(
        event,
        start_ms=line.start_ms,
        end_ms=line.end_ms,
        confidence=line.confidence,
        words=line_words(line),
    )


def timed(
    event: TranscriptEvent,
    *,
    start_ms: int,
    end_ms: int,
    confidence: float | None,
    words: list[WordTiming] | None,
) -> TranscriptEvent:
    """A final's timing fields (issue 17): ``startMs``/``endMs``/``confidence`` always,
    ``words`` when the engine gave them (a viewer that did not ask gets the event
    :func:`without_words`)."""
    event["startMs"] = start_ms
    event["endMs"] = end_ms
    event["confidence"] = confidence
    if words is not None:
        event["words"] = words
    return event


def without_words(event: ProducerEvent) -> ProducerEvent:
    """The event as a connection that did not ask for word timings gets it."""
    if "words" not in event:
        return event
    return cast(ProducerEvent, {k: v for k, v in event.items() if k != "words"})


def speaker(speaker_id: str, name: str) -> Speaker:
    return {"id": speaker_id, "name": name}


def speaker_event(speaker_id: str, name: str) -> SpeakerEvent:
    """A speaker was (re)named: viewers rename the lines already shown."""
    return {"type": "speaker", "speaker": speaker(speaker_id, name)}


def revised_event(line: TranscriptLine) -> TranscriptEvent:
    """A correction of final ``line.seq`` (``line`` as read: its current text): a final's
    shape plus ``revised: true``, so a viewer replaces that line in place. The fan-out
    lets it through whatever seq the viewer is at, and it never advances the viewer's
    seq (see :class:`mcustt.fanout.Follow`)."""
    event = line_event(line)
    event["revised"] = True
    return event


def language(code: str) -> LanguageEvent:
    return {"type": "language", "code": code}


def session_end(reason: str | None = None) -> SessionEndEvent:
    event: SessionEndEvent = {"type": "session-end"}
    if reason:
        event["reason"] = reason
    return event


def error(code: str, message: str, *, fatal: bool) -> ErrorEvent:
    return {"type": "error", "code": code, "message": message, "fatal": fatal}


def pong(ts: Any) -> PongEvent:
    return {"type": "pong", "ts": ts}


def stop(reason: str) -> StopControl:
    return {"type": "_stop", "reason": reason}


class Event:
    """One broker message, parsed once per node and shared by every local viewer.

    ``raw`` goes to WebSocket viewers as-is; ``sse`` is encoded on first use and then
    reused, so serialization costs once per node, not once per viewer. The ASGI messages
    that carry them (:attr:`ws_message`, :attr:`sse_message`) are built once as well and
    handed, read-only, to every viewer's ``send``.
    """

    __slots__ = (
        "_plain",
        "_sse",
        "_sse_message",
        "_ws_message",
        "data",
        "is_final",
        "raw",
        "revised",
        "seq",
        "speaker",
        "type",
    )

    def __init__(self, raw: str, data: dict[str, Any] | None = None) -> None:
        self.raw = raw
        self.data: dict[str, Any] = data if data is not None else json.loads(raw)
        if not isinstance(self.data, dict):
            raise ValueError("an event is a JSON object")
        # Read by every viewer's filter: looked up once here.
        self.type = str(self.data.get("type", ""))
        seq = self.data.get("seq")
        self.seq: int | None = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        self.is_final = bool(self.data.get("isFinal"))
        #: the participant id of a track's transcript ("" for the mixed producer): live
        #: lines are per speaker, so viewers filter interims per speaker
        speaker = self.data.get("speaker")
        speaker_id = speaker.get("id") if isinstance(speaker, dict) else None
        self.speaker: str = speaker_id if isinstance(speaker_id, str) else ""
        #: a correction of a final already sent (issue 16): not a new line, no new seq
        self.revised = self.data.get("revised") is True
        self._sse: bytes | None = None
        self._ws_message: dict[str, Any] | None = None
        self._sse_message: dict[str, Any] | None = None
        #: issue 17: this event for connections that did not ask for word timings (made
        #: once per node, on first use; the event itself when it has none)
        self._plain: Event | None = None if "words" in self.data else self

    def without_words(self) -> Event:
        """This event without ``words``, for a viewer that did not ask for them."""
        plain = self._plain
        if plain is None:
            data = {k: v for k, v in self.data.items() if k != "words"}
            plain = self._plain = Event(dumps(data), data)
        return plain

    @property
    def sse(self) -> bytes:
        if self._sse is None:
            lines = [f"event: {self.type}"]
            # A correction carries no id: it must not move the browser's Last-Event-ID
            # back to an older line (a reconnect would then replay from there).
            if (
                self.type == "transcript"
                and self.is_final
                and self.seq is not None
                and not self.revised
            ):
                lines.append(f"id: {self.seq}")
            payload = {k: v for k, v in self.data.items() if k != "type"}
            lines.append("data: " + dumps(payload))
            self._sse = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return self._sse

    @property
    def ws_message(self) -> dict[str, Any]:
        """The ASGI ``websocket.send`` message of :attr:`raw` (shared: do not mutate)."""
        if self._ws_message is None:
            self._ws_message = {"type": "websocket.send", "text": self.raw}
        return self._ws_message

    @property
    def sse_message(self) -> dict[str, Any]:
        """The ASGI ``http.response.body`` message of :attr:`sse` (shared: do not mutate)."""
        if self._sse_message is None:
            self._sse_message = {"type": "http.response.body", "body": self.sse, "more_body": True}
        return self._sse_message

    @classmethod
    def make(cls, data: ChannelMessage) -> Event:
        # A TypedDict is a plain dict at run time: shared as is, not copied.
        return cls(dumps(data), cast(dict[str, Any], data))
