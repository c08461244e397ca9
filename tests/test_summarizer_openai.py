"""The OpenAI summarizer against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_server import SUMMARY, FakeOpenAI, Recorded, Reply, running_fake_openai

from mcustt import wire
from mcustt.config import Settings
from mcustt.summarizers import load_summarizer
from mcustt.summarizers.base import ActionItem, Line, SummarizerError, SummarizerUnavailable
from mcustt.summarizers.openai import (
    RESPONSE_FORMAT,
    SUMMARY_SCHEMA,
    InvalidOutput,
    OpenAISummarizer,
    RetryPolicy,
    chunk_transcript,
    parse_summary,
)

FIXTURE = Path(__file__).parent / "fixtures" / "standup_en.json"


def standup_lines() -> list[Line]:
    turns = json.loads(FIXTURE.read_text())["turns"]
    return [Line(text=t["text"], speaker=t["speaker"]) for t in turns]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with running_fake_openai() as server:
        yield server


class Sleeps(list[float]):
    """Stands in for asyncio.sleep: records the backoff instead of waiting it out."""

    async def __call__(self, delay: float) -> None:
        self.append(delay)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


MakeSummarizer = Callable[..., OpenAISummarizer]


@pytest.fixture
async def make(fake: FakeOpenAI, sleeps: Sleeps) -> AsyncIterator[MakeSummarizer]:
    made: list[OpenAISummarizer] = []

    def factory(**overrides: Any) -> OpenAISummarizer:
        values: dict[str, Any] = {
            "openai_api_key": "sk-test-123",
            "openai_base_url": fake.base_url,
            "openai_timeout_s": 5.0,
            **overrides,
        }
        settings = Settings(**values)
        summarizer = OpenAISummarizer(
            settings,
            retry=RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=1.0, jitter=0),
            sleep=sleeps,
        )
        made.append(summarizer)
        return summarizer

    yield factory
    for summarizer in made:
        await summarizer.aclose()


async def test_sends_model_schema_auth_and_transcript(
    fake: FakeOpenAI, make: MakeSummarizer
) -> None:
    fake.script.append(Reply.json(SUMMARY))
    result = await make().summarize(standup_lines(), lang="en")

    assert result.model == "gpt-4o-mini"
    assert result.lang == "en"
    assert result.content.to_json() == SUMMARY
    assert result.content.action_items[0] == ActionItem("Priya", "Write the database migration")
    assert result.content.action_items[1].owner is None

    [request] = fake.requests
    assert request.headers["authorization"] == "Bearer sk-test-123"
    body = request.body
    assert body["model"] == "gpt-4o-mini"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "meeting_summary", "strict": True, "schema": SUMMARY_SCHEMA},
    }
    assert body["response_format"] == RESPONSE_FORMAT
    # Strict mode's rules: every property required, nothing extra allowed.
    schema = body["response_format"]["json_schema"]["schema"]
    assert (
        set(schema["required"]) == set(schema["properties"]) and not schema["additionalProperties"]
    )
    item = schema["properties"]["actionItems"]["items"]
    assert set(item["required"]) == {"owner", "task"} and not item["additionalProperties"]

    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user"]
    assert "en" in body["messages"][0]["content"]
    assert "B: Yes, we need a feature flag. Priya will write the database migration." in (
        request.user_text
    )
    assert "A: Do we need a feature flag for the rollout?" in request.user_text


async def test_configured_model_and_language_are_used(
    fake: FakeOpenAI, make: MakeSummarizer
) -> None:
    fake.script.append(Reply.json(SUMMARY))
    result = await make(openai_model="llama-3.1-8b").summarize(standup_lines(), lang="es")
    assert result.model == "llama-3.1-8b"
    assert result.lang == "es"
    assert fake.requests[0].body["model"] == "llama-3.1-8b"
    assert "language es" in fake.requests[0].body["messages"][0]["content"]


async def test_invalid_output_is_retried_once_with_the_problem_spelled_out(
    fake: FakeOpenAI, make: MakeSummarizer, sleeps: Sleeps
) -> None:
    fake.script.extend([Reply.text("Sure! Here is your summary: ..."), Reply.json(SUMMARY)])
    result = await make().summarize(standup_lines(), lang="en")
    assert result.content.to_json() == SUMMARY
    assert len(fake.requests) == 2
    retry = fake.requests[1].body["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[2]["content"] == "Sure! Here is your summary: ..."
    assert "not JSON" in retry[3]["content"]
    assert sleeps == []  # a bad answer is not a transport problem: no backoff


@pytest.mark.parametrize(
    "second",
    [
        {"tldr": 3, "decisions": [], "actionItems": [], "qa": []},
        {"tldr": "x", "decisions": [], "qa": []},
        {"tldr": "x", "decisions": [1], "actionItems": [], "qa": []},
        {"tldr": "x", "decisions": [], "actionItems": [{"owner": 7, "task": "t"}], "qa": []},
    ],
)
async def test_invalid_output_twice_is_a_summarizer_error(
    fake: FakeOpenAI, make: MakeSummarizer, second: dict[str, Any]
) -> None:
    fake.script.extend([Reply.text("not json at all"), Reply.json(second)])
    with pytest.raises(SummarizerError, match="invalid summary twice"):
        await make().summarize(standup_lines(), lang="en")
    assert len(fake.requests) == 2


async def test_server_errors_back_off_exponentially_then_succeed(
    fake: FakeOpenAI, make: MakeSummarizer, sleeps: Sleeps
) -> None:
    fake.script.extend([Reply.fail(500), Reply.fail(503), Reply.json(SUMMARY)])
    result = await make().summarize(standup_lines(), lang="en")
    assert result.content.to_json() == SUMMARY
    assert len(fake.requests) == 3
    assert sleeps == [0.01, 0.02]


async def test_rate_limit_honours_retry_after(
    fake: FakeOpenAI, make: MakeSummarizer, sleeps: Sleeps
) -> None:
    fake.script.extend([Reply.rate_limited(0.25), Reply.json(SUMMARY)])
    result = await make().summarize(standup_lines(), lang="en")
    assert result.content.to_json() == SUMMARY
    assert len(fake.requests) == 2
    assert sleeps == [0.25]


async def test_timeouts_are_retried(fake: FakeOpenAI, make: MakeSummarizer, sleeps: Sleeps) -> None:
    fake.script.extend([Reply(content=json.dumps(SUMMARY), delay_s=2.0), Reply.json(SUMMARY)])
    result = await make(openai_timeout_s=0.2).summarize(standup_lines(), lang="en")
    assert result.content.to_json() == SUMMARY
    assert len(fake.requests) == 2
    assert sleeps == [0.01]


async def test_transient_failures_give_up_after_bounded_attempts(
    fake: FakeOpenAI, make: MakeSummarizer, sleeps: Sleeps
) -> None:
    fake.responder = lambda _: Reply.rate_limited(0)
    with pytest.raises(SummarizerError) as info:
        await make().summarize(standup_lines(), lang="en")
    assert "after 3 attempts" in info.value.message
    assert "HTTP 429" in info.value.message
    assert len(fake.requests) == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply.fail(401, "Incorrect API key provided"), "401"),
        (Reply.fail(400, "Invalid schema for response_format"), "400"),
        (
            Reply(status=429, error="You exceeded your current quota", code="insufficient_quota"),
            "429",
        ),
    ],
)
async def test_permanent_failures_are_not_retried(
    fake: FakeOpenAI, make: MakeSummarizer, sleeps: Sleeps, reply: Reply, status: str
) -> None:
    fake.script.append(reply)
    with pytest.raises(SummarizerError) as info:
        await make().summarize(standup_lines(), lang="en")
    assert f"HTTP {status}" in info.value.message
    assert reply.error is not None and reply.error in info.value.message
    assert info.value.status_code == 502
    assert len(fake.requests) == 1
    assert sleeps == []


def partial(tag: str) -> dict[str, Any]:
    return {
        "tldr": f"Part {tag}.",
        "decisions": [f"Decision {tag}"],
        "actionItems": [{"owner": "Priya", "task": f"Task {tag}"}],
        "qa": [],
    }


MERGED = {
    "tldr": "The whole meeting.",
    "decisions": ["All decisions"],
    "actionItems": [{"owner": "Priya", "task": "Everything"}],
    "qa": [],
}


def is_reduce(request: Recorded) -> bool:
    return "summaries of consecutive parts" in request.user_text


def map_reduce_responder(request: Recorded) -> Reply:
    if is_reduce(request):
        return Reply.json(MERGED)
    # Each map call answers with the number of its part, so the reduce input can be checked.
    first = request.user_text.split("\n", 1)[0]  # "Part 2 of 5 of a meeting transcript:"
    return Reply.json(partial(first.split()[1]))


async def test_long_transcript_is_mapped_then_reduced(
    fake: FakeOpenAI, make: MakeSummarizer
) -> None:
    lines = [Line(text=f"Line number {i} says something useful.", speaker="A") for i in range(80)]
    fake.responder = map_reduce_responder
    # Several chunks, but room for all their partial summaries in one reduce call.
    budget = 1000
    result = await make(openai_context_chars=budget).summarize(lines, lang="en")
    assert result.content.to_json() == MERGED

    *maps, reduce = fake.requests
    assert len(maps) == len(chunk_transcript(lines, budget)) >= 3
    assert not any(is_reduce(r) for r in maps) and is_reduce(reduce)
    # Each map call sees one chunk within budget; together they cover every line once.
    seen: list[str] = []
    for r in maps:
        chunk = r.user_text.split("\n", 1)[1]
        assert len(chunk) <= budget
        seen += chunk.splitlines()
    assert seen == [f"A: Line number {i} says something useful." for i in range(80)]
    # The reduce call gets every partial summary, schema and all.
    for n in range(1, len(maps) + 1):
        assert f'"tldr": "Part {n}."' in reduce.user_text
    assert reduce.body["response_format"] == RESPONSE_FORMAT


async def test_partials_that_overflow_the_budget_are_reduced_in_rounds(
    fake: FakeOpenAI, make: MakeSummarizer
) -> None:
    lines = [Line(text=f"Line number {i} says something useful.", speaker="A") for i in range(40)]
    fake.responder = map_reduce_responder
    # Room for two partial summaries at a time, not all of them.
    result = await make(openai_context_chars=300).summarize(lines, lang="en")
    assert result.content.to_json() == MERGED
    reduces = [r for r in fake.requests if is_reduce(r)]
    maps = [r for r in fake.requests if not is_reduce(r)]
    assert len(maps) >= 5 and len(reduces) >= 2
    assert is_reduce(fake.requests[-1])


async def test_a_failing_chunk_fails_the_summary(fake: FakeOpenAI, make: MakeSummarizer) -> None:
    lines = [Line(text=f"Line number {i} says something useful.", speaker="A") for i in range(40)]
    fake.responder = lambda _: Reply.fail(401, "Incorrect API key provided")
    with pytest.raises(SummarizerError, match="401"):
        await make(openai_context_chars=400).summarize(lines, lang="en")
    assert not any(is_reduce(r) for r in fake.requests)


async def test_without_a_key_check_and_summarize_are_unavailable() -> None:
    summarizer = OpenAISummarizer(Settings(summarizer="openai"))
    with pytest.raises(SummarizerUnavailable) as info:
        await summarizer.check()
    assert info.value.status_code == 503
    assert "OPENAI_API_KEY" in info.value.message
    with pytest.raises(SummarizerUnavailable):
        await summarizer.summarize(standup_lines(), lang="en")
    await summarizer.aclose()


async def test_with_a_key_check_passes_without_calling_out(
    fake: FakeOpenAI, make: MakeSummarizer
) -> None:
    await make().check()
    assert fake.requests == []


async def test_empty_transcript_makes_no_request(fake: FakeOpenAI, make: MakeSummarizer) -> None:
    result = await make().summarize([Line(text=""), Line(text="   ")], lang="en")
    assert result.content.to_json() == wire.SummaryContent(
        tldr="", decisions=[], actionItems=[], qa=[]
    )
    assert fake.requests == []


def test_registry_builds_the_openai_summarizer() -> None:
    summarizer = load_summarizer(Settings(summarizer="openai", openai_api_key="sk-x"))
    assert isinstance(summarizer, OpenAISummarizer)
    assert summarizer.model == "gpt-4o-mini"


# --- pieces -----------------------------------------------------------------------------


def test_parse_summary_normalises_blanks() -> None:
    content = parse_summary(
        json.dumps(
            {
                "tldr": "  Done. ",
                "decisions": ["A", " "],
                "actionItems": [{"owner": "", "task": "T"}, {"owner": "Bo", "task": " "}],
                "qa": [],
                "extra": "ignored",
            }
        )
    )
    assert content.to_json() == {
        "tldr": "Done.",
        "decisions": ["A"],
        "actionItems": [{"owner": None, "task": "T"}],
        "qa": [],
    }


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (None, "empty"),
        ("", "empty"),
        ("[1, 2]", "object"),
        ('{"tldr": "x"}', "missing decisions, actionItems, qa"),
        ('{"tldr": "x", "decisions": "d", "actionItems": [], "qa": []}', "decisions"),
        ('{"tldr": "x", "decisions": [], "actionItems": {}, "qa": []}', "actionItems"),
        ('{"tldr": "x", "decisions": [], "actionItems": ["t"], "qa": []}', r"actionItems\[0\]"),
        ('{"tldr": "x", "decisions": [], "actionItems": [{"owner": null}], "qa": []}', "task"),
    ],
)
def test_parse_summary_rejects(raw: str | None, problem: str) -> None:
    with pytest.raises(InvalidOutput, match=problem):
        parse_summary(raw)


def test_chunks_respect_the_budget_and_cut_overlong_lines_between_words() -> None:
    lines = [Line(text="word " * 50, speaker="A"), Line(text="short", speaker=None)]
    chunks = chunk_transcript(lines, 64)
    assert all(len(c) <= 64 for c in chunks)
    assert " ".join(" ".join(chunks).split()) == " ".join(("A: " + "word " * 50 + "short").split())
    assert chunk_transcript([Line(text="a"), Line(text="b")], 64) == ["a\nb"]
    assert chunk_transcript([], 64) == []


def test_backoff_policy() -> None:
    policy = RetryPolicy(attempts=5, base_delay_s=1.0, max_delay_s=5.0, jitter=0)
    assert [policy.delay(n, None) for n in range(1, 5)] == [1.0, 2.0, 4.0, 5.0]
    assert policy.delay(1, 30.0) == 5.0  # a server's wish is capped too
    jittery = RetryPolicy(base_delay_s=1.0, jitter=0.2)
    assert all(0.8 <= jittery.delay(1, None) <= 1.2 for _ in range(50))
