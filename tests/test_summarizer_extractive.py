"""The extractive summarizer: what a person would accept, fast, deterministic, non-blocking."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcustt import wire
from mcustt.config import Settings
from mcustt.summarizers import load_summarizer
from mcustt.summarizers.base import ActionItem, Line
from mcustt.summarizers.extractive import ExtractiveSummarizer, summarize_lines

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "standup_en.json"


def standup_lines() -> list[Line]:
    data = json.loads(FIXTURE.read_text())
    return [
        Line(text=t["text"], speaker=t["speaker"], seq=i, ts=1_700_000_000 + t["start_s"])
        for i, t in enumerate(data["turns"])
    ]


def hour_long(words: int = 9000, seed: int = 3) -> list[Line]:
    """A synthetic hour: chatter with the standup's kinds of cues mixed in."""
    rng = random.Random(seed)
    people = ["Alice", "Bob", "Chen", "Dana", "Priya", "Marcus"]
    things = ["billing page", "search index", "mobile app", "invoice export", "login flow"]
    templates = [
        "The {t} is ready for review and the tests are green.",
        "I looked at the {t} numbers yesterday and they look better than last week.",
        "Customers keep asking about the {t} in support tickets.",
        "We decided to ship the {t} on Friday.",
        "{p} will update the documentation for the {t}.",
        "Do we need a feature flag for the {t}?",
        "Yes, we need a feature flag for the {t}.",
        "I'll set up alerts for the {t}.",
    ]
    lines: list[Line] = []
    count = 0
    while count < words:
        text = " ".join(
            rng.choice(templates).format(t=rng.choice(things), p=rng.choice(people))
            for _ in range(rng.randint(1, 3))
        )
        lines.append(Line(text=text, speaker=rng.choice(people), seq=len(lines)))
        count += len(text.split())
    return lines


async def test_standup_fixture_gives_an_acceptable_summary() -> None:
    result = await ExtractiveSummarizer(Settings()).summarize(standup_lines(), lang="en")
    content = result.content
    assert result.model == "extractive-v1"
    assert result.lang == "en"

    # The Friday ship decision, with "it" resolved so it reads on its own.
    assert any("ship" in d.lower() and "friday" in d.lower() for d in content.decisions)
    assert "Ship the billing page on Friday" in content.decisions

    # The feature-flag question with its answer.
    assert any("feature flag" in qa and "A: Yes" in qa for qa in content.qa), content.qa
    assert content.qa[0].startswith("Q: Do we need a feature flag for the rollout? A: Yes")

    # Priya's and Marcus's commitments, owner and task split apart.
    owners = {a.owner: a.task for a in content.action_items}
    assert "migration" in owners["Priya"].lower()
    assert "pricing documentation" in owners["Marcus"].lower()
    assert ActionItem(owner="Priya", task="Write the database migration") in content.action_items

    # A 2-4 sentence tldr, about the meeting's subject, in the transcript's order.
    sentences = [s for s in content.tldr.split(". ") if s]
    assert 2 <= len(sentences) <= 4
    assert "billing page" in content.tldr.lower()

    wire = content.to_json()
    assert set(wire) == {"tldr", "decisions", "actionItems", "qa"}
    assert {"owner": "Marcus", "task": owners["Marcus"]} in wire["actionItems"]


def test_registry_default_is_extractive() -> None:
    summarizer = load_summarizer(Settings())
    assert isinstance(summarizer, ExtractiveSummarizer)
    assert summarizer.model == "extractive-v1"


async def test_empty_transcript_gives_empty_summary() -> None:
    # No lines, or blank ones: the summarizer contract (test_contract_summarizers.py).
    # Noise markers are blank to this summarizer too.
    lines = [Line(text="  "), Line(text="[noise]")]
    result = await ExtractiveSummarizer(Settings()).summarize(lines, lang="en")
    assert result.content.to_json() == wire.SummaryContent(
        tldr="", decisions=[], actionItems=[], qa=[]
    )


async def test_lang_is_passed_through() -> None:
    lines = [Line(text="Buenos días a todos, bienvenidos a la reunión semanal.", speaker="es")]
    result = await ExtractiveSummarizer(Settings()).summarize(lines, lang="es")
    assert result.lang == "es"
    assert result.content.tldr == "Buenos días a todos, bienvenidos a la reunión semanal."


async def test_one_hour_transcript_is_fast_and_bounded() -> None:
    lines = hour_long()
    assert sum(len(line.text.split()) for line in lines) >= 9000
    started = time.perf_counter()
    result = await ExtractiveSummarizer(Settings()).summarize(lines, lang="en")
    elapsed = time.perf_counter() - started
    assert elapsed < 3.0, f"took {elapsed:.2f}s"  # loose: CI boxes vary; see the bench
    content = result.content
    assert 2 <= content.tldr.count(".") <= 4
    # Repeated cues collapse into distinct entries, and the lists stay readable.
    assert 0 < len(content.decisions) <= 12
    assert len(set(content.decisions)) == len(content.decisions)
    assert 0 < len(content.action_items) <= 20
    assert 0 < len(content.qa) <= 8


async def test_summarizing_does_not_block_the_event_loop() -> None:
    lines = hour_long(seed=5)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        before = ticks
        await ExtractiveSummarizer(Settings()).summarize(lines, lang="en")
        during = ticks - before
    finally:
        task.cancel()
    assert during >= 3, "the loop stalled while summarizing"


def test_output_is_deterministic_across_runs_and_hash_seeds() -> None:
    lines = hour_long(words=3000, seed=11)
    first = summarize_lines(lines).to_json()
    assert summarize_lines(lines).to_json() == first
    # Set iteration order changes with PYTHONHASHSEED; the summary must not.
    script = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(ROOT)!r}, {str(Path(__file__).parent)!r}]\n"
        "from test_summarizer_extractive import hour_long, summarize_lines\n"
        "print(json.dumps(summarize_lines(hour_long(words=3000, seed=11)).to_json()))\n"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(out.stdout) == first


# --- the cues, one at a time ------------------------------------------------------------


def summary_of(*turns: tuple[str | None, str]) -> wire.SummaryContent:
    return summarize_lines([Line(text=text, speaker=who) for who, text in turns]).to_json()


def test_named_request_is_an_action_for_the_named_person() -> None:
    s = summary_of(("A", "Marcus, can you update the release notes?"), ("B", "Sure, I'll do it."))
    # The "I'll do it" reply is the same task, not a second one.
    assert s["actionItems"] == [{"owner": "Marcus", "task": "Update the release notes"}]
    assert s["qa"] == []


def test_unnamed_request_goes_to_whoever_accepts_it() -> None:
    s = summary_of(("A", "Can you send me the slides from the review?"), ("Dana", "Yes, will do."))
    assert s["actionItems"] == [{"owner": "Dana", "task": "Send me the slides from the review"}]


def test_declined_request_is_not_an_action() -> None:
    s = summary_of(("A", "Marcus, can you update the docs?"), ("B", "No, I can't this week."))
    assert s["actionItems"] == []


def test_first_person_commitment_is_owned_by_the_speaker() -> None:
    assert summary_of(("Dana", "I'll update the onboarding docs."))["actionItems"] == [
        {"owner": "Dana", "task": "Update the onboarding docs"}
    ]
    assert summary_of((None, "I'll update the onboarding docs."))["actionItems"] == [
        {"owner": None, "task": "Update the onboarding docs"}
    ]


def test_explicit_action_items_and_several_owners_in_one_sentence() -> None:
    s = summary_of(
        ("A", "Action item: Priya to send the notes to legal."),
        ("A", "Bob will book the room and Chen will order lunch."),
    )
    assert s["actionItems"] == [
        {"owner": "Priya", "task": "Send the notes to legal"},
        {"owner": "Bob", "task": "Book the room"},
        {"owner": "Chen", "task": "Order lunch"},
    ]


def test_capitalised_non_names_are_not_owners() -> None:
    s = summary_of(("A", "Thursday will be busy for everyone."), ("B", "Billing will ship Friday."))
    assert s["actionItems"] == []
    assert s["decisions"] == ["Billing will ship Friday"]


@pytest.mark.parametrize(
    ("said", "decision"),
    [
        ("Let's go with Postgres for the queue.", "Go with Postgres for the queue"),
        ("We decided not to ship on Friday.", "Do not ship on Friday"),
        (
            "We're going to use feature flags for every launch.",
            "Use feature flags for every launch",
        ),
        ("The budget for the offsite was approved.", "The budget for the offsite was approved"),
    ],
)
def test_decision_cues(said: str, decision: str) -> None:
    assert summary_of(("A", said))["decisions"] == [decision]


def test_undecided_is_not_a_decision() -> None:
    assert summary_of(("A", "We haven't decided to ship yet."))["decisions"] == []


def test_agreement_ratifies_the_previous_proposal() -> None:
    s = summary_of(("A", "I suggest we move the standup to ten."), ("B", "Agreed."))
    assert s["decisions"] == ["Move the standup to ten"]


def test_qa_without_speakers_and_with_a_bare_yes() -> None:
    s = summary_of((None, "When is the launch?"), (None, "Next Tuesday at noon."))
    assert s["qa"] == ["Q: When is the launch? A: Next Tuesday at noon"]
    s = summary_of(("A", "Is staging green?"), ("B", "Yes. All checks passed this morning."))
    assert s["qa"] == ["Q: Is staging green? A: Yes. All checks passed this morning"]


def test_unpunctuated_asr_text_still_yields_qa_and_decisions() -> None:
    s = summary_of(
        ("A", "do we need a feature flag for the rollout"),
        ("B", "yes we need a feature flag"),
        ("A", "we decided to ship the billing page on friday"),
    )
    assert s["qa"] == [
        "Q: do we need a feature flag for the rollout? A: yes we need a feature flag"
    ]
    assert s["decisions"] == ["Ship the billing page on friday"]


def test_duplicates_are_merged() -> None:
    s = summary_of(
        ("A", "Action item: write the migration."),
        ("B", "Priya will write the migration."),
        ("A", "So Priya will write the migration, right."),
        ("A", "We decided to ship on Friday."),
        ("B", "Right, we decided to ship on Friday."),
    )
    # The owner learnt later is kept on the first mention.
    assert s["actionItems"] == [{"owner": "Priya", "task": "Write the migration"}]
    assert s["decisions"] == ["Ship on Friday"]


def test_look_alikes_are_not_action_items() -> None:
    s = summary_of(
        ("A", "The action items from last week are all done."),
        ("B", "We have lots to do, let's start with billing."),
        ("A", "Let me know if you need anything."),
    )
    assert s["actionItems"] == []


def test_a_run_on_line_does_not_become_the_whole_tldr() -> None:
    blob = " ".join(f"the {w} service handles requests" for w in ["auth", "billing", "search"] * 40)
    tldr = summary_of(("A", blob))["tldr"]
    assert isinstance(tldr, str)
    assert 0 < len(tldr.split()) <= 4 * 30
