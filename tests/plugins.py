"""Summarizer plug-ins for job tests, loaded by ``module:Class`` like any third party's.

``SlowSummarizer`` records each run's start and end in the file named by
``MCUSTT_TEST_RUNLOG`` (one line per event, appended atomically), so tests across
processes can prove a job ran once and never twice at the same time.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence

from mcustt.summarizers.base import Line, Summarizer, SummarizerError, SummaryContent, SummaryResult


def _log(event: str, tag: str) -> None:
    path = os.environ.get("MCUSTT_TEST_RUNLOG")
    if path:
        line = json.dumps({"event": event, "tag": tag, "pid": os.getpid(), "t": time.time()}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


class SlowSummarizer(Summarizer):
    name = "slow"

    async def summarize(
        self, lines: Sequence[Line], *, lang: str, prompt: str | None = None
    ) -> SummaryResult:
        tag = lines[0].text.split()[0] if lines else ""
        _log("start", tag)
        await asyncio.sleep(float(os.environ.get("MCUSTT_TEST_SLOW_S", "0.3")))
        _log("end", tag)
        return SummaryResult(
            SummaryContent(tldr=f"{len(lines)} lines about {tag}"), "slow-v1", lang
        )


class FailingSummarizer(Summarizer):
    name = "failing"

    async def summarize(
        self, lines: Sequence[Line], *, lang: str, prompt: str | None = None
    ) -> SummaryResult:
        raise SummarizerError("the model refused: quota exhausted")
