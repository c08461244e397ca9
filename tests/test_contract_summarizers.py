"""The summarizer contract (mcustt.testing.summarizer) run against every summarizer
mcustt ships: extractive, and openai against the local fake OpenAI server.

Both are built through ``load_summarizer``, as the app builds them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes.openai_server import SUMMARY, FakeOpenAI, Reply, meeting_ai, running_fake_openai

from mcustt.config import Settings
from mcustt.summarizers import Summarizer, load_summarizer
from mcustt.summarizers.extractive import ExtractiveSummarizer
from mcustt.summarizers.openai import OpenAISummarizer
from mcustt.testing.summarizer import MEETING, RemoteSummarizerContract, SummarizerContract


async def _built(settings: Settings, kind: type[Summarizer]) -> AsyncIterator[Summarizer]:
    summarizer = load_summarizer(settings)
    assert isinstance(summarizer, kind)
    yield summarizer
    await summarizer.aclose()


class TestExtractiveSummarizer(SummarizerContract):
    @pytest.fixture
    async def summarizer(self) -> AsyncIterator[Summarizer]:
        async for summarizer in _built(Settings(), ExtractiveSummarizer):
            yield summarizer


class TestOpenAISummarizer(RemoteSummarizerContract):
    @pytest.fixture
    async def fake(self) -> AsyncIterator[FakeOpenAI]:
        async with running_fake_openai() as fake:
            # Every request (a whole transcript, a map or a reduce call; a summary, an
            # answer or a document) gets a valid reply of the shape it asks for.
            fake.responder = meeting_ai
            yield fake

    def settings(self, fake: FakeOpenAI, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "summarizer": "openai",
            "openai_api_key": "sk-test-123",
            "openai_base_url": fake.base_url,
            "openai_timeout_s": 5.0,
            **overrides,
        }
        return Settings(**values)

    @pytest.fixture
    async def summarizer(self, fake: FakeOpenAI) -> AsyncIterator[Summarizer]:
        async for summarizer in _built(self.settings(fake), OpenAISummarizer):
            yield summarizer

    @pytest.fixture
    async def unconfigured_summarizer(self) -> AsyncIterator[Summarizer]:
        async for summarizer in _built(Settings(summarizer="openai"), OpenAISummarizer):
            yield summarizer

    @pytest.fixture
    async def failing_summarizer(self, fake: FakeOpenAI) -> AsyncIterator[Summarizer]:
        # A permanent refusal: no retries to sit through.
        fake.responder = lambda _: Reply.fail(401, "Incorrect API key provided")
        async for summarizer in _built(self.settings(fake), OpenAISummarizer):
            yield summarizer

    async def test_only_a_language_model_writes_documents(self, summarizer: Summarizer) -> None:
        assert summarizer.writes_documents
        assert not ExtractiveSummarizer.writes_documents

    async def test_the_contract_runs_against_the_fake(
        self, fake: FakeOpenAI, summarizer: Summarizer
    ) -> None:
        # The contract's summaries are the fake's replies, through the real client.
        result = await summarizer.summarize(MEETING, lang="en")
        assert result.content.to_json() == SUMMARY
        [request] = fake.requests
        assert "Priya: I'll write the database migration" in request.user_text
