"""Shared fixtures: real servers on free ports, over every storage backend.

PostgreSQL and Redis are real. When ``CI=true`` a test that needs them fails if they
are absent; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from mcustt import wire
from mcustt.asgi import Outermost
from mcustt.config import Settings
from mcustt.ingest.whip import WhipManager
from mcustt.server import Server, uvicorn_config
from mcustt.state import AppState
from mcustt.store.db import migrate
from mcustt.store.models import Session

if TYPE_CHECKING:
    import psycopg

FIXTURES = Path(__file__).parent / "fixtures"
CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get(
    "MCUSTT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("MCUSTT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN = "test-admin-token"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fault tests (issue 13) stop and start the shared PostgreSQL and Redis: they run
    last, so no other test sees a service go away under it."""
    items.sort(key=lambda item: item.get_closest_marker("faults") is not None)


@pytest.fixture
def fault_services() -> Iterator[None]:
    """For tests that stop services: whatever they left down is started again."""
    import faults

    if not (faults.pg_available() and faults.redis_available()):
        need_service("PostgreSQL and Redis", "fault tests restart them")
    yield
    faults.ensure_services()


@pytest.fixture
def fault_pg() -> Iterator[str]:
    """A fresh, migrated database on the fault tests' PostgreSQL (dropped after)."""
    import faults

    from mcustt.store.db import migrate

    url = faults.pg_database()
    migrate(url)
    yield url
    faults.pg_drop(url)


def need_service(name: str, reason: str) -> None:
    """Fail under CI (the service must be there), skip elsewhere."""
    if CI:
        pytest.fail(f"{name} is required when CI=true: {reason}")
    pytest.skip(f"{name} not available: {reason}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- PostgreSQL -------------------------------------------------------------------------


def _pg_connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    import psycopg

    return psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True, connect_timeout=3
    )


def create_pg_database() -> str:
    """A fresh, empty database on the test server; returns its URL."""
    name = "mcustt_" + uuid.uuid4().hex[:12]
    try:
        with _pg_connect(PG_ADMIN_URL) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        need_service("PostgreSQL", f"{PG_ADMIN_URL}: {exc}")
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with contextlib.suppress(Exception), _pg_connect(PG_ADMIN_URL) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """One migrated PostgreSQL database for the whole run (tests use their own tenants)."""
    url = create_pg_database()
    migrate(url)
    yield url
    drop_pg_database(url)


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        need_service("Redis", f"{REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/mcustt.db"
        migrate(url)
        return url
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/mcustt.db"
    migrate(url)
    return url


def make_settings(database_url: str, **overrides: Any) -> Settings:
    base = Settings(
        database_url=database_url,
        admin_token=ADMIN,
        recognizer="null",
        redis_prefix="t" + uuid.uuid4().hex[:10],
        log_level="warning",
        recognizer_workers=1,
        retention_interval_s=3600,
        # Admission control (issue 13) reads the machine's load: a shared test machine's
        # would refuse producers at random. Its tests turn it on themselves.
        max_loop_lag_ms=0,
        max_loop_busy=0,
        max_recognizer_load=0,
    )
    return replace(base, **overrides)


# -- servers ------------------------------------------------------------------------------


@dataclass
class Running:
    settings: Settings
    url: str
    ws_url: str
    server: uvicorn.Server
    task: asyncio.Task[None]
    app: Starlette  # the app under uvicorn's outermost layer

    @property
    def state(self) -> AppState:
        """The node's services (its lifespan has started them)."""
        state: AppState = self.app.state.mcustt
        return state

    @property
    def whip(self) -> WhipManager:
        """The node's WebRTC producers."""
        whip = self.app.state.whip
        assert isinstance(whip, WhipManager)
        return whip

    async def stored_session(self, session_id: str) -> Session:
        """The stored row of a session the test has created (so it exists)."""
        session = await self.state.sessions.get(session_id)
        assert session is not None, f"no session {session_id}"
        return session

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kwargs)


@contextlib.asynccontextmanager
async def run_server(settings: Settings) -> AsyncIterator[Running]:
    """A real uvicorn server in this event loop, on a free port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = replace(settings, public_url=url)
    config = uvicorn_config(settings, host="127.0.0.1", port=port)
    assert isinstance(config.app, Outermost)
    app: Starlette = config.app.app
    # The server class `mcustt serve` runs (it tells the hub when shutdown starts).
    server = Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # startup failed: raise its error
    try:
        yield Running(settings, url, f"ws://127.0.0.1:{port}", server, task, app)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=20)


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Running]:
    """A server on each database (SQLite and PostgreSQL)."""
    async with run_server(make_settings(db_url)) as running:
        yield running


@pytest.fixture
async def sqlite_server(sqlite_url: str) -> AsyncIterator[Running]:
    async with run_server(make_settings(sqlite_url)) as running:
        yield running


async def new_tenant(srv: Running, **body: Any) -> wire.TenantWithKey:
    body.setdefault("name", "Acme " + uuid.uuid4().hex[:6])
    async with srv.client() as c:
        r = await c.post(
            "/api/admin/tenants", json=body, headers={"authorization": f"Bearer {ADMIN}"}
        )
    assert r.status_code == 201, r.text
    doc: wire.TenantWithKey = r.json()
    return doc


async def new_session(srv: Running, key: str, **body: Any) -> wire.SessionCreated:
    async with srv.client() as c:
        r = await c.post("/api/sessions", json=body, headers={"x-tenant-key": key})
    assert r.status_code == 201, r.text
    doc: wire.SessionCreated = r.json()
    return doc


def read_wav(name: str) -> bytes:
    """PCM16 16 kHz mono samples of a fixture (its 44-byte header dropped)."""
    import wave

    with wave.open(str(FIXTURES / name), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


# -- server processes (multi-node tests) ------------------------------------------------


@dataclass
class Node:
    url: str
    ws_url: str
    proc: Any
    log_path: Path

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kwargs)


@contextlib.asynccontextmanager
async def spawn_node(env: dict[str, str], log_path: Path) -> AsyncIterator[Node]:
    """``python -m mcustt serve`` in its own process, as an operator would run it."""
    import subprocess
    import sys

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {
        **os.environ,
        "MCUSTT_ADMIN_TOKEN": ADMIN,
        "MCUSTT_PUBLIC_URL": url,
        "MCUSTT_LOG_LEVEL": "info",
        # as in make_settings: no admission by load unless a test asks (issue 13)
        "MCUSTT_MAX_LOOP_LAG_MS": "0",
        "MCUSTT_MAX_LOOP_BUSY": "0",
        "MCUSTT_MAX_RECOGNIZER_LOAD": "0",
        "PYTHONPATH": str(Path(__file__).parent),
        **env,
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcustt", "serve", "--port", str(port)],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=url) as c:
            for _ in range(300):
                if proc.poll() is not None:
                    raise RuntimeError(f"node exited: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await c.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"node did not start: {log_path.read_text()[-2000:]}")
        yield Node(url, f"ws://127.0.0.1:{port}", proc, log_path)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 20)
        except TimeoutError:
            proc.kill()
