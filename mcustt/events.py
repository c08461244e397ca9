"""Wire events (§5 server → client) and their once-per-node parsed form."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from mcustt.store.models import TranscriptLine


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def transcript(*, seq: int, text: str, is_final: bool, lang: str, ts: int) -> dict[str, Any]:
    return {
        "type": "transcript",
        "text": text,
        "isFinal": is_final,
        "seq": seq,
        "lang": lang,
        "ts": ts,
    }


def line_event(line: TranscriptLine) -> dict[str, Any]:
    return transcript(seq=line.seq, text=line.text, is_final=True, lang=line.lang, ts=line.ts)


def language(code: str) -> dict[str, Any]:
    return {"type": "language", "code": code}


def session_end(reason: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "session-end"}
    if reason:
        event["reason"] = reason
    return event


def error(code: str, message: str, *, fatal: bool) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "fatal": fatal}


class Event:
    """One broker message, parsed once per node and shared by every local viewer.

    ``raw`` goes to WebSocket viewers as-is; ``sse`` is encoded on first use and then
    reused, so serialization costs once per node, not once per viewer.
    """

    __slots__ = ("__dict__", "data", "raw")

    def __init__(self, raw: str, data: dict[str, Any] | None = None) -> None:
        self.raw = raw
        self.data: dict[str, Any] = data if data is not None else json.loads(raw)

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))

    @property
    def seq(self) -> int | None:
        seq = self.data.get("seq")
        return seq if isinstance(seq, int) else None

    @property
    def is_final(self) -> bool:
        return bool(self.data.get("isFinal"))

    @property
    def internal(self) -> bool:
        """Node-to-node control (``_``-prefixed type), never shown to viewers."""
        return self.type.startswith("_")

    @cached_property
    def sse(self) -> bytes:
        lines = [f"event: {self.type}"]
        if self.type == "transcript" and self.is_final and self.seq is not None:
            lines.append(f"id: {self.seq}")
        payload = {k: v for k, v in self.data.items() if k != "type"}
        lines.append("data: " + dumps(payload))
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    @classmethod
    def make(cls, data: dict[str, Any]) -> Event:
        return cls(dumps(data), data)
