"""A summarizer plug-in for the hostile-input tests, loaded by ``module:Class``.

It summarizes until a test tells it to fail, then fails the way a real one can: with an
exception whose text holds internals (as a database error holds its SQL and parameters),
or with its own client-facing report that quotes something secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from mcustt.config import Settings
from mcustt.summarizers.base import Line, Summarizer, SummarizerError, SummaryContent, SummaryResult

#: What a PostgreSQL error says about itself: the statement and its parameters.
INTERNALS = (
    "(psycopg.errors.NumericValueOutOfRange) bigint out of range "
    "[SQL: SELECT transcript_lines.text FROM transcript_lines WHERE seq >= %(seq_1)s] "
    "[parameters: {'seq_1': 'CONFIDENTIAL-7731'}]"
)


class FlakySummarizer(Summarizer):
    name = "flaky"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        #: None: summarize; "internal": raise an unexpected error; "reported": raise a
        #: SummarizerError whose reason quotes ``quote``
        self.fail: Literal["internal", "reported"] | None = None
        self.quote = ""

    async def summarize(
        self, lines: Sequence[Line], *, lang: str, prompt: str | None = None
    ) -> SummaryResult:
        if self.fail == "internal":
            raise RuntimeError(INTERNALS)
        if self.fail == "reported":
            raise SummarizerError(f"the model provider refused the request with {self.quote}")
        return SummaryResult(SummaryContent(tldr=f"{len(lines)} lines"), "flaky-v1", lang)
