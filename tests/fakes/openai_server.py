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
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


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
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

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
