"""Offline English recognition with pocketsphinx, decoded in a pool of worker processes.

``MCUSTT_RECOGNIZER=sphinx``. pocketsphinx holds the GIL while it decodes, so every
decoder lives in a worker process and the event loop only moves bytes. The parts:

* ``worker.py``: what runs inside a worker process (the decoders, the loop over its
  pipe) and the pipe's wire protocol;
* ``pool.py``: the worker pool in the server process (spawning, replacing dead and
  hung workers, routing utterances to workers, flow control of the audio in flight);
* ``stream.py``: :class:`SphinxStream`, one utterance (batching, interims, the final);
* this module: :class:`SphinxRecognizer`, the seam's entry point, which ties them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar

from mcustt.config import Settings
from mcustt.recognizers.base import Recognizer, RecognizerStream
from mcustt.recognizers.sphinx.pool import WorkerPool
from mcustt.recognizers.sphinx.stream import SphinxStream
from mcustt.recognizers.sphinx.worker import MODEL, WorkerStats

__all__ = ["SphinxRecognizer", "WorkerStats"]


class SphinxRecognizer(Recognizer):
    """pocketsphinx en-US in ``settings.workers`` processes."""

    name: ClassVar[str] = "sphinx"
    #: one acoustic and language model, US English: any English hint is served by it
    #: (an accent costs accuracy, not the language); any other language is refused
    languages: ClassVar[frozenset[str] | None] = frozenset({"en"})
    #: lower-case words without punctuation: restored by the pipeline (issue 17)
    punctuates: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._pool = WorkerPool(settings.workers, decoders=settings.sphinx_decoders)
        self._uids = itertools.count(1)

    @property
    def model(self) -> str:
        return MODEL

    async def start(self) -> None:
        await self._pool.start()

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def check(self) -> None:
        self._pool.check()

    def load(self) -> float | None:
        return self._pool.load()

    def open_stream(
        self,
        *,
        language: str,
        auto_detect: bool,
        language_hints: Sequence[str] = (),
        keywords: Sequence[str] = (),
    ) -> RecognizerStream:
        # One model: every language is decoded as en-US and labelled so. Hints were
        # checked against ``languages``; keywords are not used: pocketsphinx's only
        # vocabulary lever is its keyword-spotting search, which replaces the language
        # model (it spots the phrases and nothing else), so it cannot favour them.
        return SphinxStream(self._pool, next(self._uids))

    async def stats(self) -> list[WorkerStats]:
        """Decoder counters of every live worker (for tests and diagnostics)."""
        return await self._pool.stats()
