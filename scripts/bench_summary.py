"""Time the extractive summarizer on a generated one-hour meeting.

Usage::

    .venv/bin/python scripts/bench_summary.py [--words 9000] [--runs 7] [--seed 7] [--show]

The transcript is generated deterministically (same seed, same text), roughly 150 spoken
words a minute, so 9,000 words is an hour: six speakers, status updates and chatter with
decisions, action items and questions sprinkled in. Prints best and median wall time of
``ExtractiveSummarizer.summarize`` (including the hop to the worker thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcustt.config import Settings
from mcustt.summarizers.base import Line
from mcustt.summarizers.extractive import ExtractiveSummarizer

SPEAKERS = ["Alice", "Bob", "Chen", "Dana", "Priya", "Marcus"]
COMPONENTS = [
    "billing page",
    "search index",
    "mobile app",
    "invoice export",
    "login flow",
    "pricing api",
    "onboarding emails",
    "data warehouse",
    "audit log",
    "admin console",
]
STATUSES = [
    "is ready for review",
    "still has a few flaky tests",
    "needs another pass on error handling",
    "is about eighty percent done",
    "was deployed to staging yesterday",
    "is blocked on the vendor contract",
    "is slower than we expected under load",
    "passed the security review last week",
]
CHATTER = [
    "I think we should look at the {c} numbers again before we commit to anything.",
    "Customers keep asking about the {c} in their support tickets.",
    "The error rate on the {c} went up a little after the last release.",
    "Honestly the {c} has been pretty stable for the last two sprints.",
    "We spent most of yesterday pairing on the {c} and it was worth it.",
    "There is a long thread in the channel about the {c} if anyone wants the background.",
    "The design team shared new mockups for the {c} this morning.",
    "I was surprised how much traffic the {c} gets on Monday mornings.",
    "We should keep an eye on memory usage in the {c} over the weekend.",
    "The metrics dashboard for the {c} is finally showing the right numbers.",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
DECISIONS = [
    "We decided to ship the {c} on {d}.",
    "Let's go with the simpler design for the {c}.",
    "We agreed to freeze changes to the {c} until {d}.",
    "The migration plan for the {c} was approved.",
]
TASKS = [
    "write the database migration for the {c}",
    "update the documentation for the {c}",
    "set up alerts for the {c}",
    "review the open pull requests on the {c}",
    "talk to the vendor about the {c}",
    "write a short postmortem about the {c} outage",
]
QUESTIONS = [
    ("Do we need a feature flag for the {c}?", "Yes, we need a feature flag for the rollout."),
    ("Is the {c} covered by the load tests?", "No, not yet, but it is on the list."),
    ("Who owns the on-call rotation for the {c}?", "The platform team owns it this quarter."),
    ("Can we drop the old endpoint of the {c}?", "Yes, nobody has called it in a month."),
]


def generate_transcript(words: int = 9000, seed: int = 7) -> list[Line]:
    rng = random.Random(seed)
    lines: list[Line] = []
    count = 0
    t = 1_700_000_000.0

    def say(speaker: str, text: str) -> None:
        nonlocal count, t
        lines.append(Line(text=text, speaker=speaker, seq=len(lines), ts=t, lang="en"))
        count += len(text.split())
        t += len(text.split()) / 2.5  # ~150 words a minute

    while count < words:
        speaker = rng.choice(SPEAKERS)
        c = rng.choice(COMPONENTS)
        roll = rng.random()
        if roll < 0.06:
            say(speaker, rng.choice(DECISIONS).format(c=c, d=rng.choice(DAYS)))
        elif roll < 0.12:
            owner = rng.choice([s for s in SPEAKERS if s != speaker])
            task = rng.choice(TASKS).format(c=c)
            form = rng.randrange(3)
            if form == 0:
                say(speaker, f"{owner} will {task} before {rng.choice(DAYS)}.")
            elif form == 1:
                say(speaker, f"I'll {task}.")
            else:
                say(speaker, f"{owner}, can you {task}?")
                say(owner, "Sure, I can do that this week.")
        elif roll < 0.18:
            question, answer = rng.choice(QUESTIONS)
            say(speaker, question.format(c=c))
            say(rng.choice([s for s in SPEAKERS if s != speaker]), answer)
        else:
            sentences = [f"The {c} {rng.choice(STATUSES)}."]
            sentences += [rng.choice(CHATTER).format(c=c) for _ in range(rng.randint(1, 3))]
            say(speaker, " ".join(sentences))
    return lines


async def _time_runs(lines: list[Line], runs: int) -> tuple[list[float], dict[str, object]]:
    summarizer = ExtractiveSummarizer(Settings())
    timings: list[float] = []
    content: dict[str, object] = {}
    for _ in range(runs):
        started = time.perf_counter()
        result = await summarizer.summarize(lines, lang="en")
        timings.append(time.perf_counter() - started)
        content = result.content.to_json()
    return timings, content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=9000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--show", action="store_true", help="print the summary too")
    args = parser.parse_args()
    # The summarizer's per-run debug line would interleave with the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))

    lines = generate_transcript(args.words, args.seed)
    n_words = sum(len(line.text.split()) for line in lines)
    timings, content = asyncio.run(_time_runs(lines, args.runs))
    print(f"transcript: {len(lines)} lines, {n_words} words, {len(SPEAKERS)} speakers")
    print(
        f"extractive: best {min(timings) * 1000:.1f} ms, "
        f"median {statistics.median(timings) * 1000:.1f} ms over {args.runs} runs"
    )
    counts = {k: len(v) for k, v in content.items() if isinstance(v, list)}
    print(f"summary: {counts}")
    if args.show:
        print(json.dumps(content, indent=2))


if __name__ == "__main__":
    main()
