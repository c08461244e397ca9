"""The app's live state in one explicit object (uvicorn's ``ServerState`` pattern).

Everything with a lifetime (database, broker, engines, producers, tasks) hangs here,
created in the lifespan's startup and closed in its shutdown, in order.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcustt.config import Settings
from mcustt.limits import RateLimiter
from mcustt.metrics import Metrics
from mcustt.tokens import random_id

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from mcustt.fanout import Hub
    from mcustt.jobs import JobRunner
    from mcustt.pipeline import PipelineRegistry
    from mcustt.recognizers import Recognizer
    from mcustt.sessions import SessionService
    from mcustt.store.db import Database
    from mcustt.store.repo import Repo
    from mcustt.summarizers import Summarizer
    from mcustt.tokens import TokenIssuer
    from mcustt.usage import UsageMeter


@dataclass
class AppState:
    settings: Settings
    node_id: str = field(default_factory=lambda: "node_" + random_id(8))
    started_at: float = field(default_factory=time.time)
    metrics: Metrics = field(default_factory=Metrics)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Filled in by the lifespan:
    db: Database = None  # type: ignore[assignment]
    repo: Repo = None  # type: ignore[assignment]
    issuer: TokenIssuer = None  # type: ignore[assignment]
    sessions: SessionService = None  # type: ignore[assignment]
    limiter: RateLimiter = None  # type: ignore[assignment]
    hub: Hub = None  # type: ignore[assignment]
    recognizer: Recognizer = None  # type: ignore[assignment]
    summarizer: Summarizer = None  # type: ignore[assignment]
    pipelines: PipelineRegistry = None  # type: ignore[assignment]
    usage: UsageMeter = None  # type: ignore[assignment]
    jobs: JobRunner = None  # type: ignore[assignment]
    whip: Any = None  # the WHIP manager, when WebRTC ingest is enabled

    def client_ip(self, conn: HTTPConnection) -> str:
        """The client's address (behind trusted proxies, uvicorn's ProxyHeadersMiddleware
        has put the right-most untrusted X-Forwarded-For hop in the scope)."""
        return conn.client.host if conn.client else "unknown"

    def spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        """Start a background task owned by the app: cancelled at shutdown."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


def app_state(conn: HTTPConnection) -> AppState:
    """The app's state, from any request or WebSocket of the app."""
    state: AppState = conn.app.state.mcustt
    return state


def new_secret() -> str:
    return secrets.token_urlsafe(48)
