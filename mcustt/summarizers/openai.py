"""Summaries from OpenAI, or any server that speaks its chat completions API.

``OPENAI_BASE_URL`` points the client elsewhere (vLLM, Ollama, LiteLLM, Azure-style
proxies), so the only contract relied on is ``POST /v1/chat/completions`` with
``response_format`` ``json_schema``.

What can go wrong, and what happens:

* timeouts, connection errors, 408/409/429/5xx: retried with exponential backoff (the
  server's ``Retry-After`` wins when it sends one), a bounded number of times;
* other 4xx (bad key, unknown model, malformed request) and a 429 for an exhausted quota:
  permanent, :class:`SummarizerError` at once, since repeating the request cannot help;
* a reply that is not the JSON we asked for: asked again once, with the problem spelled
  out, then :class:`SummarizerError`.

Transcripts longer than ``MCUSTT_OPENAI_CONTEXT_CHARS`` are summarized map-reduce: each
chunk to the same schema, then the partial summaries merged by one more call.

Questions (:meth:`OpenAISummarizer.ask`) and documents
(:meth:`OpenAISummarizer.write_document`) use the same client, retry rules and
structured outputs: an answer is ``{answer, citations: [line number]}`` over a transcript
whose lines carry their ``seq``; a document is ``{markdown}``. A long meeting is mapped
chunk by chunk (a partial answer with its cited lines, or notes for the document) and
the parts are then combined by one more call.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
import structlog
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from mcustt.config import Settings
from mcustt.summarizers.base import (
    ActionItem,
    Answer,
    Citation,
    Document,
    Line,
    Summarizer,
    SummarizerError,
    SummarizerUnavailable,
    SummaryContent,
    SummaryResult,
)

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

#: Strict structured outputs need every property required and no extra properties;
#: "no owner" is therefore ``null``, not an absent key.
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tldr": {
            "type": "string",
            "description": "Two to four sentences: what the meeting was about and its outcome.",
        },
        "decisions": {
            "type": "array",
            "description": "Each decision taken, short, e.g. 'Ship the billing page on Friday'.",
            "items": {"type": "string"},
        },
        "actionItems": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "owner": {
                        "type": ["string", "null"],
                        "description": "Who committed to it or was asked to; null if nobody.",
                    },
                    "task": {"type": "string", "description": "Imperative, e.g. 'Write the …'."},
                },
                "required": ["owner", "task"],
            },
        },
        "qa": {
            "type": "array",
            "description": "Questions asked and their answers, each as 'Q: … A: …'.",
            "items": {"type": "string"},
        },
    },
    "required": ["tldr", "decisions", "actionItems", "qa"],
}

RESPONSE_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {"name": "meeting_summary", "strict": True, "schema": SUMMARY_SCHEMA},
}

_INSTRUCTIONS = """\
You summarize meeting transcripts for the people who were in the meeting.
Lines are "Speaker: words"; the speaker labels may be names or anonymous letters.
Reply with one JSON object and nothing else:
- tldr: two to four sentences on what the meeting covered and what came of it;
- decisions: every decision taken, each short and self-contained \
(e.g. "Ship the billing page on Friday");
- actionItems: every task someone committed to or was asked to do, with owner the name \
used in the meeting (or the speaker label) and null when nobody took it, and task a \
short imperative (e.g. "Write the database migration");
- qa: notable questions with the answer given, each as "Q: <question> A: <answer>".
Use only what the transcript says; never invent owners, dates or decisions. Use empty \
lists when there is nothing. The transcript comes from live speech recognition, so expect \
missing punctuation and misheard words. Write in the language {lang}.\
"""

_MERGE = (
    "These are summaries of consecutive parts of one meeting, in order. Merge them into "
    "one summary of the whole meeting in the same JSON shape: a tldr for the whole "
    "meeting, and every decision, action item and question exactly once (merge duplicates, "
    "keep the latest version when a later part revises an earlier one)."
)

#: Added to the summary instructions when the caller sends a ``prompt``.
_SUMMARY_PROMPT = """

The reader also asks for this; follow it where the transcript allows, still replying \
with the JSON object only:
{prompt}\
"""

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "answer": {"type": "string", "description": "The answer, from the transcript only."},
        "citations": {
            "type": "array",
            "description": "The numbers of the transcript lines the answer rests on.",
            "items": {"type": "integer"},
        },
    },
    "required": ["answer", "citations"],
}

ANSWER_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {"name": "meeting_answer", "strict": True, "schema": ANSWER_SCHEMA},
}

DOCUMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"markdown": {"type": "string", "description": "The document, in markdown."}},
    "required": ["markdown"],
}

DOCUMENT_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {"name": "meeting_document", "strict": True, "schema": DOCUMENT_SCHEMA},
}

_ASK = """\
You answer questions about a meeting from its transcript. Each transcript line is \
"[number] Speaker: words"; the speaker labels may be names or anonymous letters.
Reply with one JSON object and nothing else:
- answer: a short, direct answer using only what the transcript says; if the \
transcript does not answer the question, say so plainly;
- citations: the numbers of the lines the answer rests on (empty when none does).
The transcript comes from live speech recognition, so expect missing punctuation and \
misheard words. Write in the language {lang}.\
"""

_ASK_PART = (
    "This is part {part} of {parts} of the meeting. Answer from this part alone; when it "
    "says nothing relevant to the question, reply with an empty answer and no citations."
)

_ASK_MERGE = (
    "These are answers to the question from consecutive parts of one meeting, each with "
    "the lines it cites. Combine them into one answer for the whole meeting (a later part "
    "may revise an earlier one), citing the line numbers it rests on."
)

_DOCUMENT = """\
You write documents from meeting transcripts, as the reader's instruction asks. Lines \
are "Speaker: words"; the speaker labels may be names or anonymous letters.
Reply with one JSON object and nothing else: markdown, the document in markdown. Use \
only what the transcript says; never invent names, dates or decisions. The transcript \
comes from live speech recognition, so expect missing punctuation and misheard words. \
Write in the language {lang} unless the instruction asks otherwise.\
"""

_DOCUMENT_PART = (
    "This is part {part} of {parts} of the meeting. Do not write the document yet: in "
    "markdown, note everything in this part the instruction will need (who said what, "
    "decisions, numbers, dates), concisely. Empty when nothing is relevant."
)

_DOCUMENT_MERGE = (
    "These are notes, in order, on consecutive parts of one meeting. Write the document "
    "the instruction asks for from them."
)

_NOTES_MERGE = (
    "These are notes, in order, on consecutive parts of one meeting. Merge them into one "
    "set of notes, keeping everything the instruction will need."
)

_TRANSIENT_STATUS = frozenset({408, 409, 429})
#: requests in flight at once during the map step: parallel, but gentle on rate limits
MAP_CONCURRENCY = 4
#: below this a context budget cannot hold a useful chunk; keeps tiny settings from looping
MIN_CONTEXT_CHARS = 64


#: Answers that no line supports, said plainly.
NO_TRANSCRIPT = "Nothing has been said in this meeting yet, so there is nothing to answer from."
NOT_DISCUSSED = "The transcript does not answer this question."


class InvalidOutput(ValueError):
    """The model's reply is not a summary of the requested shape."""


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried; tests pass tiny delays."""

    attempts: int = 3  # requests per call, the first included
    base_delay_s: float = 1.0
    max_delay_s: float = 20.0
    #: +/- this fraction of each backoff, so workers hit by the same 429 spread out
    jitter: float = 0.2

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after_s is not None:
            return min(max(0.0, retry_after_s), self.max_delay_s)
        backoff = min(self.base_delay_s * 2.0 ** (attempt - 1), self.max_delay_s)
        if self.jitter:
            backoff *= 1.0 + random.uniform(-self.jitter, self.jitter)
        return backoff


class OpenAISummarizer(Summarizer):
    name = "openai"
    writes_documents = True

    def __init__(
        self,
        settings: Settings,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(settings)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self._client: AsyncOpenAI | None = None

    @property
    def model(self) -> str:
        return self.settings.openai_model

    async def check(self) -> None:
        # Configuration only: probing the API from /readyz would spend quota on every probe.
        if not self.settings.openai_api_key:
            raise SummarizerUnavailable("MCUSTT_SUMMARIZER=openai needs OPENAI_API_KEY")

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def summarize(
        self, lines: Sequence[Line], *, lang: str, prompt: str | None = None
    ) -> SummaryResult:
        await self.check()
        chunks = chunk_transcript(lines, self._budget)
        if not chunks:
            return SummaryResult(content=SummaryContent(tldr=""), model=self.model, lang=lang)
        started = time.perf_counter()
        system = _INSTRUCTIONS.format(lang=lang)
        if prompt and prompt.strip():
            # In the system message, so every map and reduce call follows it too.
            system += _SUMMARY_PROMPT.format(prompt=prompt.strip())
        if len(chunks) == 1:
            content = await self._complete(system, "Transcript:\n" + chunks[0], "summary")
        else:
            content = await self._map_reduce(system, chunks)
        log.info(
            "summary.openai.done",
            model=self.model,
            chunks=len(chunks),
            elapsed_s=round(time.perf_counter() - started, 2),
        )
        return SummaryResult(content=content, model=self.model, lang=lang)

    async def ask(self, lines: Sequence[Line], question: str, *, lang: str) -> Answer:
        await self.check()
        # Lines are referred to by seq; lines without one (a batch) by their position.
        refs = {_ref(i, line): line for i, line in enumerate(lines) if line.text.strip()}
        chunks = chunk_transcript(lines, self._budget, numbered=True)
        if not chunks:
            return Answer(answer=NO_TRANSCRIPT, citations=[], extractive=False, model=self.model)
        system = _ASK.format(lang=lang)
        question = question.strip()
        started = time.perf_counter()
        if len(chunks) == 1:
            reply = await self._structured(
                system,
                f"Transcript:\n{chunks[0]}\n\nQuestion: {question}",
                "ask",
                ANSWER_FORMAT,
                parse_answer,
            )
        else:

            async def ask_part(i: int, chunk: str) -> tuple[str, list[int]]:
                part = _ASK_PART.format(part=i + 1, parts=len(chunks))
                return await self._structured(
                    system,
                    f"{part}\nTranscript:\n{chunk}\n\nQuestion: {question}",
                    f"ask map {i + 1}/{len(chunks)}",
                    ANSWER_FORMAT,
                    parse_answer,
                )

            partials = [p for p in await self._map(ask_part, chunks) if p[0].strip() or p[1]]
            if not partials:
                reply = (NOT_DISCUSSED, [])
            elif len(partials) == 1:
                reply = partials[0]
            else:
                body = "\n\n".join(
                    f"Answer {n}: {answer}\nCited lines:\n"
                    + "\n".join(_render(refs[r], r) for r in cited if r in refs)
                    for n, (answer, cited) in enumerate(partials, start=1)
                )
                reply = await self._structured(
                    system,
                    f"{_ASK_MERGE}\n\n{body}\n\nQuestion: {question}",
                    "ask reduce",
                    ANSWER_FORMAT,
                    parse_answer,
                )
        answer, cited = reply
        citations = [
            Citation(
                seq=refs[r].seq,
                text=" ".join(refs[r].text.split()),
                speaker=(refs[r].speaker or "").strip() or None,
            )
            # In transcript order, once each; a number the transcript lacks is dropped.
            for r in sorted(set(cited))
            if r in refs
        ]
        log.info(
            "ask.openai.done",
            model=self.model,
            chunks=len(chunks),
            citations=len(citations),
            elapsed_s=round(time.perf_counter() - started, 2),
        )
        return Answer(
            answer=answer.strip() or NOT_DISCUSSED,
            citations=citations,
            extractive=False,
            model=self.model,
        )

    async def write_document(self, lines: Sequence[Line], prompt: str, *, lang: str) -> Document:
        await self.check()
        chunks = chunk_transcript(lines, self._budget)
        system = _DOCUMENT.format(lang=lang)
        instruction = f"Instruction: {prompt.strip()}"
        started = time.perf_counter()
        if not chunks:
            # Nothing was said yet; the model still writes what the instruction asks for
            # about an empty meeting rather than us making something up.
            chunks = ["(the transcript is empty)"]
        if len(chunks) == 1:
            markdown = await self._structured(
                system,
                f"{instruction}\n\nTranscript:\n{chunks[0]}",
                "document",
                DOCUMENT_FORMAT,
                parse_document,
            )
        else:

            async def notes_of(i: int, chunk: str) -> str:
                part = _DOCUMENT_PART.format(part=i + 1, parts=len(chunks))
                return await self._structured(
                    system,
                    f"{instruction}\n\n{part}\nTranscript:\n{chunk}",
                    f"document map {i + 1}/{len(chunks)}",
                    DOCUMENT_FORMAT,
                    parse_document,
                )

            notes = [n for n in await self._map(notes_of, chunks) if n.strip()]
            # Notes of a very long meeting may overflow the budget themselves: merged in
            # groups that fit, round after round, like partial summaries.
            while len(notes) > 1 and sum(len(n) + 2 for n in notes) > self._budget:
                merged: list[str] = []
                for group in _groups(notes, self._budget):
                    if len(group) == 1:
                        merged.append(group[0][1])
                        continue
                    body = "\n\n---\n\n".join(text for _, text in group)
                    merged.append(
                        await self._structured(
                            system,
                            f"{instruction}\n\n{_NOTES_MERGE}\n\n{body}",
                            "document notes",
                            DOCUMENT_FORMAT,
                            parse_document,
                        )
                    )
                notes = merged
            body = "\n\n---\n\n".join(notes) or "(nothing in the meeting is relevant)"
            markdown = await self._structured(
                system,
                f"{instruction}\n\n{_DOCUMENT_MERGE}\n\n{body}",
                "document reduce",
                DOCUMENT_FORMAT,
                parse_document,
            )
        log.info(
            "document.openai.done",
            model=self.model,
            chunks=len(chunks),
            elapsed_s=round(time.perf_counter() - started, 2),
        )
        return Document(markdown=markdown, model=self.model)

    async def _map(self, work: Callable[[int, str], Awaitable[_T]], chunks: list[str]) -> list[_T]:
        """``work`` over every chunk, :data:`MAP_CONCURRENCY` at a time, in order."""
        gate = asyncio.Semaphore(MAP_CONCURRENCY)

        async def gated(i: int, chunk: str) -> _T:
            async with gate:
                return await work(i, chunk)

        # As in _map_reduce: the first error surfaces as itself; the rest are cancelled.
        tasks = [asyncio.ensure_future(gated(i, c)) for i, c in enumerate(chunks)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def _budget(self) -> int:
        return max(MIN_CONTEXT_CHARS, self.settings.openai_context_chars)

    async def _map_reduce(self, system: str, chunks: list[str]) -> SummaryContent:
        gate = asyncio.Semaphore(MAP_CONCURRENCY)

        async def summarize_part(i: int, chunk: str) -> SummaryContent:
            async with gate:
                prompt = f"Part {i + 1} of {len(chunks)} of a meeting transcript:\n{chunk}"
                return await self._complete(system, prompt, f"map {i + 1}/{len(chunks)}")

        # gather, not a TaskGroup: the first SummarizerError should surface as itself, not
        # wrapped in an ExceptionGroup. The other calls are then pointless: cancel them, and
        # collect them so no failure is left unretrieved.
        tasks = [asyncio.ensure_future(summarize_part(i, c)) for i, c in enumerate(chunks)]
        try:
            partials = list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Merge until one summary is left; a very long meeting's partials may themselves
        # overflow the budget, so they are merged in groups that fit, round after round.
        while len(partials) > 1:
            merged: list[SummaryContent] = []
            for group in _groups([_dump(p) for p in partials], self._budget):
                if len(group) == 1:
                    merged.append(partials[group[0][0]])
                    continue
                body = "[\n" + ",\n".join(text for _, text in group) + "\n]"
                merged.append(await self._complete(system, f"{_MERGE}\n{body}", "reduce"))
            partials = merged
        return partials[0]

    async def _complete(self, system: str, prompt: str, purpose: str) -> SummaryContent:
        """One summary from the model, asking again once if the reply is not valid."""
        return await self._structured(system, prompt, purpose, RESPONSE_FORMAT, parse_summary)

    async def _structured(
        self,
        system: str,
        prompt: str,
        purpose: str,
        response_format: ResponseFormatJSONSchema,
        parse: Callable[[str | None], _T],
    ) -> _T:
        """One reply in ``response_format``'s shape, asking again once if it is not valid."""
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt},
        ]
        problem = ""
        for attempt in (1, 2):
            completion = await self._create(messages, purpose, response_format)
            message = completion.choices[0].message if completion.choices else None
            raw = message.content if message is not None else None
            try:
                if message is not None and message.refusal:
                    raise InvalidOutput(f"the model refused: {message.refusal}")
                return parse(raw)
            except InvalidOutput as exc:
                problem = str(exc)
                log.warning(
                    "summary.openai.invalid_output",
                    purpose=purpose,
                    attempt=attempt,
                    problem=problem,
                )
            # Showing the model its own reply and what is wrong with it fixes more than
            # asking the same question again.
            messages = [
                *messages[:2],
                {"role": "assistant", "content": raw or ""},
                {
                    "role": "user",
                    "content": f"That reply was not valid: {problem}. Answer again with only "
                    "the JSON object in the required shape.",
                },
            ]
        what = response_format["json_schema"]["name"].replace("meeting_", "")
        raise SummarizerError(f"openai returned an invalid {what} twice: {problem}")

    async def _create(
        self,
        messages: list[ChatCompletionMessageParam],
        purpose: str,
        response_format: ResponseFormatJSONSchema = RESPONSE_FORMAT,
    ) -> ChatCompletion:
        """One chat completion, retrying what is transient."""
        client = self._get_client()
        return await call_with_retries(
            lambda: client.chat.completions.create(
                model=self.settings.openai_model,
                messages=messages,
                response_format=response_format,
            ),
            retry=self.retry,
            sleep=self._sleep,
            timeout_s=self.settings.openai_timeout_s,
            error=SummarizerError,
            event="summary.openai",
            purpose=purpose,
        )

    def _get_client(self) -> AsyncOpenAI:
        if self._client is None:
            self._client = AsyncOpenAI(
                api_key=self.settings.openai_api_key,
                base_url=self.settings.openai_base_url,
                timeout=self.settings.openai_timeout_s,
                # Retries are ours (policy above, logged, bounded); the SDK's own would
                # multiply with them.
                max_retries=0,
            )
        return self._client


def chunk_transcript(lines: Sequence[Line], budget: int, *, numbered: bool = False) -> list[str]:
    """The transcript as "Speaker: text" lines, packed into chunks of at most ``budget`` chars.

    Chunks break between lines; only a single line longer than the budget is cut, between
    words (or mid-word, for a pathological word longer than the budget). ``numbered``
    starts each line with its number in brackets (its ``seq``, see :func:`_ref`), which
    answers cite.
    """
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for i, line in enumerate(lines):
        if not line.text.strip():
            continue
        rendered = _render(line, _ref(i, line) if numbered else None)
        for piece in _cut(rendered, budget):
            extra = len(piece) + (1 if current else 0)
            if current and size + extra > budget:
                chunks.append("\n".join(current))
                current, size = [], 0
                extra = len(piece)
            current.append(piece)
            size += extra
    if current:
        chunks.append("\n".join(current))
    return chunks


def _ref(position: int, line: Line) -> int:
    """The number a line goes by in a numbered transcript: its seq, or (a batch's lines
    have none) its position from 1."""
    return line.seq if line.seq is not None else position + 1


def _render(line: Line, ref: int | None = None) -> str:
    text = " ".join(line.text.split())
    rendered = f"{line.speaker}: {text}" if line.speaker else text
    return rendered if ref is None else f"[{ref}] {rendered}"


def _cut(text: str, budget: int) -> list[str]:
    pieces: list[str] = []
    while len(text) > budget:
        cut = text.rfind(" ", 0, budget + 1)
        if cut <= 0:
            cut = budget
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        pieces.append(text)
    return pieces


def _groups(texts: list[str], budget: int) -> list[list[tuple[int, str]]]:
    """Consecutive partial summaries packed to fit ``budget``, at least two per group.

    Two per group even when that overflows the budget: otherwise oversized partials would
    never merge and the reduce would not terminate.
    """
    groups: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    size = 0
    for i, text in enumerate(texts):
        if len(current) >= 2 and size + len(text) > budget:
            groups.append(current)
            current, size = [], 0
        current.append((i, text))
        size += len(text) + 2
    if current:
        groups.append(current)
    return groups


def _dump(content: SummaryContent) -> str:
    return json.dumps(content.to_json(), ensure_ascii=False)


def parse_summary(raw: str | None) -> SummaryContent:
    """Validate a reply against :data:`SUMMARY_SCHEMA` (types and required keys).

    Extra keys are ignored; blank strings are dropped; a blank owner means no owner.
    """
    if not raw or not raw.strip():
        raise InvalidOutput("empty reply")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidOutput(f"not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, dict):
        raise InvalidOutput(f"expected a JSON object, got {type(data).__name__}")
    missing = [key for key in SUMMARY_SCHEMA["required"] if key not in data]
    if missing:
        raise InvalidOutput(f"missing {', '.join(missing)}")
    tldr = data["tldr"]
    if not isinstance(tldr, str):
        raise InvalidOutput("tldr is not a string")
    actions: list[ActionItem] = []
    raw_actions = data["actionItems"]
    if not isinstance(raw_actions, list):
        raise InvalidOutput("actionItems is not a list")
    for i, item in enumerate(raw_actions):
        if not isinstance(item, dict):
            raise InvalidOutput(f"actionItems[{i}] is not an object")
        owner, task = item.get("owner"), item.get("task")
        if not isinstance(task, str):
            raise InvalidOutput(f"actionItems[{i}].task is not a string")
        if owner is not None and not isinstance(owner, str):
            raise InvalidOutput(f"actionItems[{i}].owner is not a string or null")
        if task.strip():
            actions.append(ActionItem(owner=(owner or "").strip() or None, task=task.strip()))
    return SummaryContent(
        tldr=tldr.strip(),
        decisions=_strings(data, "decisions"),
        action_items=actions,
        qa=_strings(data, "qa"),
    )


def _json_object(raw: str | None) -> dict[str, Any]:
    if not raw or not raw.strip():
        raise InvalidOutput("empty reply")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidOutput(f"not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, dict):
        raise InvalidOutput(f"expected a JSON object, got {type(data).__name__}")
    return data


def parse_answer(raw: str | None) -> tuple[str, list[int]]:
    """Validate a reply against :data:`ANSWER_SCHEMA`: the answer and the cited numbers."""
    data = _json_object(raw)
    answer, citations = data.get("answer"), data.get("citations")
    if not isinstance(answer, str):
        raise InvalidOutput("answer is missing or not a string")
    if not isinstance(citations, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in citations
    ):
        raise InvalidOutput("citations is missing or not a list of line numbers")
    return answer, citations


def parse_document(raw: str | None) -> str:
    """Validate a reply against :data:`DOCUMENT_SCHEMA`: the markdown."""
    markdown = _json_object(raw).get("markdown")
    if not isinstance(markdown, str):
        raise InvalidOutput("markdown is missing or not a string")
    return markdown.strip()


def _strings(data: Mapping[str, Any], key: str) -> list[str]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidOutput(f"{key} is not a list of strings")
    return [v.strip() for v in value if v.strip()]


async def call_with_retries(
    call: Callable[[], Awaitable[_T]],
    *,
    retry: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
    timeout_s: float,
    error: Callable[[str], Exception],
    event: str,
    **log_fields: Any,
) -> _T:
    """One OpenAI API call, retried by ``retry`` while what failed is transient.

    Shared by every engine that talks to OpenAI (the summarizer, text to speech) so they
    retry, log and word their errors alike; ``error`` makes the engine's own error type.
    """
    reason = ""
    for attempt in range(1, retry.attempts + 1):
        retry_after: float | None = None
        try:
            return await call()
        except openai.APITimeoutError:
            reason = f"timed out after {timeout_s:g}s"
        except openai.APIConnectionError as exc:
            reason = f"connection failed: {exc}"
        except openai.APIStatusError as exc:
            reason = f"HTTP {exc.status_code}: {_error_message(exc)}"
            if not _is_transient(exc):
                log.error(f"{event}.rejected", reason=reason, **log_fields)
                raise error(f"openai rejected the request ({reason})") from exc
            retry_after = _retry_after(exc.response.headers)
        except openai.OpenAIError as exc:
            raise error(f"openai client error: {exc}") from exc
        if attempt == retry.attempts:
            break
        delay = retry.delay(attempt, retry_after)
        log.warning(
            f"{event}.retry", attempt=attempt, reason=reason, delay_s=round(delay, 3), **log_fields
        )
        await sleep(delay)
    raise error(f"openai failed after {retry.attempts} attempts ({reason})")


def _is_transient(exc: openai.APIStatusError) -> bool:
    # An exhausted quota is also a 429, but no amount of waiting within a job fixes it.
    if exc.code == "insufficient_quota":
        return False
    return exc.status_code in _TRANSIENT_STATUS or exc.status_code >= 500


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return exc.message


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``retry-after``), if any."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return float(ms) / 1000.0
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (ValueError, TypeError):
        return None
