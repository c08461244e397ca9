"""A scripted stand-in for the OpenAI chat completions endpoint.

It runs as a real HTTP server (uvicorn, in-process, on 127.0.0.1) rather than as a mocked
transport so that the tests see exactly what the ``openai`` SDK puts on the wire: the JSON
body, the ``Authorization`` header, the retry behaviour against real status codes.

Usage::

    async with running_fake_openai() as fake:
        fake.script.append(Reply.json({...}))
        settings = Settings(openai_api_key="sk-test", openai_base_url=fake.base_url)
        ...
        assert fake.requests[0].body["model"] == "gpt-4o-mini"
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcustt.tts.opus import encode_ogg_opus


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a completion whose message content is ``content``, or an error."""

    status: int = 200
    content: str | None = None
    error: str | None = None
    code: str | None = None  # the error's "code", e.g. "insufficient_quota"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # sleep before answering, to provoke client timeouts

    @classmethod
    def json(cls, payload: Any) -> Reply:
        return cls(content=json.dumps(payload))

    @classmethod
    def text(cls, content: str) -> Reply:
        return cls(content=content)

    @classmethod
    def fail(cls, status: int, message: str = "fake failure", **headers: str) -> Reply:
        return cls(status=status, error=message, headers=dict(headers))

    @classmethod
    def rate_limited(cls, retry_after_s: float = 0) -> Reply:
        return cls.fail(429, "Rate limit reached", **{"retry-after": str(retry_after_s)})


@dataclass(frozen=True)
class Recorded:
    body: dict[str, Any]
    headers: dict[str, str]  # lower-cased names

    @property
    def schema_name(self) -> str | None:
        """The ``response_format``'s json_schema name (e.g. ``meeting_summary``)."""
        fmt = self.body.get("response_format") or {}
        name = (fmt.get("json_schema") or {}).get("name")
        return name if isinstance(name, str) else None

    @property
    def system_text(self) -> str:
        """The system message(s): where instructions such as a summary prompt go."""
        return "\n".join(
            str(m.get("content", ""))
            for m in self.body.get("messages", [])
            if m["role"] == "system"
        )

    @property
    def user_text(self) -> str:
        """Every user message's content, joined: where the transcript must show up."""
        return "\n".join(
            str(m.get("content", "")) for m in self.body.get("messages", []) if m["role"] == "user"
        )


#: A valid reply in the shape the summarizer's schema asks for.
SUMMARY: dict[str, Any] = {
    "tldr": "The billing page ships on Friday behind a feature flag.",
    "decisions": ["Ship the billing page on Friday"],
    "actionItems": [
        {"owner": "Priya", "task": "Write the database migration"},
        {"owner": None, "task": "Train the support team on the new invoices"},
    ],
    "qa": ["Q: Do we need a feature flag? A: Yes"],
}

#: Line numbers in a numbered transcript ("[12] Alice: …"), as the meeting AI sends them.
_NUMBERED = re.compile(r"^\[(\d+)\] (.*)$", re.M)
_WORDS = re.compile(r"[a-z]{5,}")


def meeting_ai(recorded: Recorded) -> Reply:
    """A reply in whichever shape the request's ``response_format`` asks for (summary,
    answer or document), so summaries, questions and documents, with their map and
    reduce calls, can all be served by one fake (``fake.responder = meeting_ai``).

    An answer cites every numbered line sharing a word of five letters or more with the
    question; a document quotes its instruction and counts the transcript lines it was shown (0
    for a reduce call, which is shown notes)."""
    name = recorded.schema_name
    text = recorded.user_text
    if name == "meeting_answer":
        question = text.rsplit("Question:", 1)[-1].lower()
        wanted = set(_WORDS.findall(question))
        cited = [
            int(n)
            for n, line in _NUMBERED.findall(text)
            if wanted & set(_WORDS.findall(line.lower()))
        ]
        answer = f"fake answer citing {len(cited)} lines" if cited else ""
        return Reply.json({"answer": answer, "citations": cited})
    if name == "meeting_document":
        instruction = text.split("\n", 1)[0].removeprefix("Instruction: ")
        transcript = text.partition("Transcript:\n")[2]
        lines = sum(1 for line in transcript.splitlines() if line.strip())
        return Reply.json({"markdown": f"# Fake document\n\n{instruction}\n\nLines seen: {lines}"})
    return Reply.json(SUMMARY)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    429: "rate_limit_exceeded",
}


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        #: consumed first, in order
        self.script: deque[Reply] = deque()
        #: then asked for every further request (e.g. to answer map and reduce calls)
        self.responder: Callable[[Recorded], Reply] | None = None
        self.base_url = ""
        self.closing = asyncio.Event()
        self._ids = itertools.count(1)
        #: text to speech (``POST /v1/audio/speech``), recorded apart from the chat
        #: requests; an unscripted request is answered with :func:`speech_audio`.
        self.speech_requests: list[Recorded] = []
        self.speech_script: deque[Reply] = deque()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/audio/speech", self._speech, methods=["POST"]),
            ]
        )

    async def _chat(self, request: Request) -> Response:
        recorded = Recorded(
            body=await request.json(),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.requests.append(recorded)
        if self.script:
            reply = self.script.popleft()
        elif self.responder is not None:
            reply = self.responder(recorded)
        else:
            # 418 is permanent for the client, so a test that forgot to script fails fast
            # instead of sitting through retries.
            reply = Reply.fail(418, "fake: nothing scripted for this request")
        if reply.delay_s:
            # Woken early at shutdown so a slow reply never holds up the test's teardown.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), reply.delay_s)
        if reply.status != 200:
            body = {
                "error": {
                    "message": reply.error or "error",
                    "type": _ERROR_TYPES.get(reply.status, "server_error"),
                    "param": None,
                    "code": reply.code or _ERROR_TYPES.get(reply.status),
                }
            }
            return JSONResponse(body, status_code=reply.status, headers=dict(reply.headers))
        return JSONResponse(
            {
                "id": f"chatcmpl-fake-{next(self._ids)}",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": recorded.body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
            headers=dict(reply.headers),
        )

    async def _speech(self, request: Request) -> Response:
        """``POST /v1/audio/speech``: checks the body the way the real endpoint does
        (400 ``invalid_request_error`` naming the ``param``), then plays the script, or
        answers a short tone as OGG/Opus."""
        recorded = Recorded(
            body=await request.json(),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.speech_requests.append(recorded)
        body = recorded.body
        problem = _speech_problem(body)
        if problem is not None:
            param, message = problem
            error = {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": None,
            }
            return JSONResponse({"error": error}, status_code=400)
        reply = self.speech_script.popleft() if self.speech_script else Reply()
        if reply.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), reply.delay_s)
        if reply.status != 200:
            error = {
                "message": reply.error or "error",
                "type": _ERROR_TYPES.get(reply.status, "server_error"),
                "param": None,
                "code": reply.code or _ERROR_TYPES.get(reply.status),
            }
            return JSONResponse(
                {"error": error}, status_code=reply.status, headers=dict(reply.headers)
            )
        audio = reply.content.encode() if reply.content is not None else speech_audio()
        return Response(audio, media_type="audio/ogg", headers=dict(reply.headers))


#: The speech endpoint's voices and formats (``tts-1`` lacks the last four voices).
SPEECH_VOICES = frozenset(
    {
        *("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx"),
        *("nova", "sage", "shimmer", "verse", "marin", "cedar"),
    }
)
SPEECH_FORMATS = frozenset({"mp3", "opus", "aac", "flac", "wav", "pcm"})


def _speech_problem(body: dict[str, Any]) -> tuple[str, str] | None:
    for name in ("model", "input", "voice"):
        if not isinstance(body.get(name), str) or not body[name]:
            return name, f"Missing required parameter: '{name}'."
    if len(body["input"]) > 4096:
        return "input", (
            "[{'type': 'string_too_long', 'loc': ('body', 'input'), 'msg': 'String should "
            "have at most 4096 characters'}]"
        )
    if body["voice"] not in SPEECH_VOICES:
        return "voice", f"Invalid value: '{body['voice']}'. Supported values are: " + ", ".join(
            f"'{v}'" for v in sorted(SPEECH_VOICES)
        )
    fmt = body.get("response_format", "mp3")
    if fmt not in SPEECH_FORMATS:
        return "response_format", f"Invalid value: '{fmt}'."
    if fmt != "opus":
        # The fake makes Opus only; a client asking for another format is a test bug.
        return "response_format", f"fake: only 'opus' is served, not {fmt!r}"
    return None


_SPEECH_AUDIO: list[bytes] = []


def speech_audio() -> bytes:
    """Half a second of a 440 Hz tone as OGG/Opus, what the endpoint answers for
    ``response_format: "opus"`` (made once)."""
    if not _SPEECH_AUDIO:
        rate = 24_000
        pcm = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
            for i in range(rate // 2)
        )
        _SPEECH_AUDIO.append(encode_ogg_opus(pcm, rate))
    return _SPEECH_AUDIO[0]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would take over SIGINT for the whole test process; leave Ctrl-C to pytest.
        yield


@contextlib.asynccontextmanager
async def running_fake_openai(fake: FakeOpenAI | None = None) -> AsyncIterator[FakeOpenAI]:
    """Serve ``fake`` on a free 127.0.0.1 port for the duration of the block."""
    fake = fake or FakeOpenAI()
    # Bind first and hand uvicorn the socket, so there is no window in which another
    # process could take the port between choosing and listening.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # No logging config or level: with them uvicorn reconfigures the whole process's
    # loggers ("uvicorn" stops propagating, "uvicorn.error" drops to WARNING), and an
    # mcustt server started later in this process no longer logs its handshakes
    # (test_logs.py).
    config = uvicorn.Config(fake.app, lifespan="off", ws="none", log_config=None, access_log=False)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # surface the startup error
            await asyncio.sleep(0.005)
        fake.base_url = f"http://127.0.0.1:{port}/v1"
        yield fake
    finally:
        fake.closing.set()
        await asyncio.sleep(0)  # let woken replies finish before connections are dropped
        server.should_exit = True
        # The client has gone by now; waiting politely for idle keep-alive connections
        # would only add uvicorn's 0.1 s polls to every test.
        server.force_exit = True
        await task
        sock.close()
