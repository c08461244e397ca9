"""Audio through a real :class:`~mcustt.pipeline.SessionPipeline`, without a server.

The streaming-WER benchmark (``scripts/bench_wer.py``) and the endpointing tests
(``tests/test_endpointing.py``) both need "this recording, captioned as a live session
would be": VAD, endpointing, batching and the recognizer, with the store, the fan-out
and the usage meter replaced by in-memory stand-ins that keep the finals.
"""

from __future__ import annotations

import time
from typing import Any

from mcustt.config import Settings
from mcustt.metrics import Metrics
from mcustt.pipeline import PipelineConfig, SessionPipeline
from mcustt.recognizers import Recognizer
from mcustt.store.models import Session, Tenant, TranscriptLine
from mcustt.vad import endpointing_of
from mcustt.wire import ChannelMessage

#: 20 ms of 16 kHz mono s16le: the frame a producer sends
FRAME_BYTES = 640


class _Store:
    """The pipeline's store seam, keeping the finals' texts in order."""

    def __init__(self, finals: list[str]) -> None:
        self.finals = finals
        self.seq = 0

    async def append_final(self, session_id: str, **line: Any) -> TranscriptLine:
        self.seq += 1
        self.finals.append(str(line["text"]))
        line.pop("audio_ms")
        line.pop("seq", None)
        return TranscriptLine(session_id=session_id, seq=self.seq, **line)

    async def set_detected_lang(self, session_id: str, lang: str) -> None:
        return None

    async def set_audio_ms(self, session_id: str, audio_ms: int) -> None:
        return None


class _Meter:
    def add(self, tenant_id: str, audio_ms: int) -> int:
        return 0

    async def flush(self) -> None:
        return None


async def _publish(session_id: str, event: ChannelMessage) -> None:
    return None


async def stream_finals(
    pcm: bytes, recognizer: Recognizer, settings: Settings, *, session_id: str = "s_streamed"
) -> list[str]:
    """The finals' texts of ``pcm`` (16 kHz mono s16le) fed in 20 ms frames, as fast as
    the pipeline takes them, through a pipeline on ``recognizer`` (started by the
    caller) with ``settings``' VAD and endpointing.

    Raises:
        Exception: whatever made the pipeline fail.
    """
    now = time.time()
    finals: list[str] = []
    pipeline = SessionPipeline(
        Session(
            id=session_id,
            tenant_id="tn_1",
            source_lang="en-US",
            auto_detect=False,
            owner_secret_hash="x",
            created_at=now,
            updated_at=now,
        ),
        Tenant(
            id="tn_1",
            name="streamed",
            key_hash="x",
            key_prefix="x",
            daily_minutes_cap=10_000,
            created_at=now,
            updated_at=now,
        ),
        lambda event: None,
        recognizer=recognizer,
        store=_Store(finals),
        publish=_publish,
        usage=_Meter(),
        metrics=Metrics(),
        config=PipelineConfig(
            vad_aggressiveness=settings.vad_aggressiveness,
            max_utterance_ms=int(settings.max_utterance_s * 1000),
            endpointing=endpointing_of(settings),
        ),
    )
    pipeline.start()
    for i in range(0, len(pcm), FRAME_BYTES):
        await pipeline.push(pcm[i : i + FRAME_BYTES])
    await pipeline.close()
    if pipeline.failure is not None:
        raise pipeline.failure
    return finals
