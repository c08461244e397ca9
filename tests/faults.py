"""Fault injection for the issue-13 scenarios: stop and start the real PostgreSQL and
Redis with the commands the machine's services page gives, and kill server processes.

By default these act on the services every other test uses (127.0.0.1:5432, cluster
``main``; 127.0.0.1:6379), so fault tests run last (``conftest`` orders the ``faults``
marker to the end) and wait until the service answers again before they return.
While developing beside other test runs, point them at private instances instead::

    MCUSTT_FAULT_PG_CLUSTER=faults MCUSTT_FAULT_PG_PORT=5440 \
    MCUSTT_FAULT_REDIS_PORT=6390 pytest -m faults
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

PG_VERSION = os.environ.get("MCUSTT_FAULT_PG_VERSION") or (
    sorted(os.listdir("/etc/postgresql"))[-1] if os.path.isdir("/etc/postgresql") else "15"
)
PG_CLUSTER = os.environ.get("MCUSTT_FAULT_PG_CLUSTER", "main")
PG_PORT = int(os.environ.get("MCUSTT_FAULT_PG_PORT", "5432"))
PG_ADMIN = f"postgresql://postgres@127.0.0.1:{PG_PORT}/test"
REDIS_PORT = int(os.environ.get("MCUSTT_FAULT_REDIS_PORT", "6379"))
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)


# -- PostgreSQL ----------------------------------------------------------------------------


def pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=2):
            return True
    except Exception:
        return False


def pg_stop() -> None:
    """Stop the cluster at once (``-m fast``: open connections are dropped)."""
    _run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, PG_CLUSTER, "stop", "-m", "fast"]
    )


def pg_start() -> None:
    """Start it (the services page's command) and wait until it accepts connections."""
    _run(["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, PG_CLUSTER, "start"])
    _wait(pg_available, "PostgreSQL")


def pg_database() -> str:
    """A fresh database on the fault cluster (SQLAlchemy URL); drop it with pg_drop."""
    name = "mcustt_f" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:{PG_PORT}/{name}"


def pg_drop(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with (
        contextlib.suppress(Exception),
        psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn,
    ):
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- Redis ---------------------------------------------------------------------------------


def _redis(timeout: float) -> redis.Redis:
    """A client that does not retry: redis-py's default retries a refused connection
    ten times with backoff, which held ``redis_stop`` ~9 s after Redis was gone (the
    SHUTDOWN's dropped connection was retried) and each ``redis_available`` ~4 s."""
    return redis.Redis(port=REDIS_PORT, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))


def redis_available() -> bool:
    try:
        return bool(_redis(1).ping())
    except Exception:
        return False


def redis_stop() -> None:
    """Shut Redis down (it keeps nothing on disk: everything in it is gone)."""
    with contextlib.suppress(redis.ConnectionError):
        _redis(2).shutdown(nosave=True)
    _wait(lambda: not redis_available(), "Redis to stop")


def redis_start() -> None:
    logfile = "/var/log/redis/ci.log" if REDIS_PORT == 6379 else f"/tmp/redis-{REDIS_PORT}.log"
    _run(
        [
            "redis-server",
            "--daemonize", "yes",
            "--bind", "127.0.0.1", "-::1",
            "--port", str(REDIS_PORT),
            "--save", "",
            "--appendonly", "no",
            "--dir", "/var/lib/redis" if os.path.isdir("/var/lib/redis") else "/tmp",
            "--logfile", logfile,
        ]
    )  # fmt: skip
    _wait(redis_available, "Redis")


# -- both ----------------------------------------------------------------------------------


def _wait(ok: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextlib.asynccontextmanager
async def outage(stop: Any, start: Any, *, seconds: float) -> AsyncIterator[None]:
    """Stop a service, keep it down ``seconds`` (the body runs meanwhile), start it again
    (always, even if the body failed: later tests need it)."""
    await asyncio.to_thread(stop)
    try:
        t0 = time.monotonic()
        yield
        rest = seconds - (time.monotonic() - t0)
        if rest > 0:
            await asyncio.sleep(rest)
    finally:
        await asyncio.to_thread(start)


def ensure_services() -> None:
    """Bring back whatever an interrupted fault test left down."""
    if not pg_available():
        with contextlib.suppress(Exception):
            pg_start()
    if not redis_available():
        with contextlib.suppress(Exception):
            redis_start()


# -- processes -----------------------------------------------------------------------------


def sigkill(proc: subprocess.Popen[Any]) -> None:
    """Kill a node the hard way: no drain, no lease release, sockets cut by the kernel."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def sigterm(proc: subprocess.Popen[Any]) -> None:
    proc.send_signal(signal.SIGTERM)


def log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


# -- the two-node scenarios' shared parts --------------------------------------------------


def node_env(pg: str, prefix: str, recognizer: str = "sphinx", **extra: str) -> dict[str, str]:
    """A node of a fault scenario: ``pg``, the fault Redis under ``prefix`` (the same
    for both nodes, so they share fan-out), one recognizer worker. ``spawn_node`` keeps
    load-based admission off (two nodes and the test share a 2-core machine)."""
    return {
        "MCUSTT_DATABASE_URL": pg,
        "MCUSTT_REDIS_URL": REDIS_URL,
        "MCUSTT_REDIS_PREFIX": prefix,
        "MCUSTT_RECOGNIZER": recognizer,
        "MCUSTT_RECOGNIZER_WORKERS": "1",
        **extra,
    }


async def tenant_and_session(node: Any, name: str) -> tuple[str, dict[str, Any]]:
    """A fresh tenant (its API key) and a session of it, made on ``node``
    (a ``conftest.Node``)."""
    from conftest import ADMIN

    async with node.client() as c:
        r = await c.post(
            "/api/admin/tenants",
            json={"name": f"{name} {uuid.uuid4().hex[:6]}"},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
        assert r.status_code == 201, r.text
        key = str(r.json()["apiKey"])
        r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": key})
        assert r.status_code == 201, r.text
        return key, r.json()


async def watch(url: str) -> Any:
    """A viewer socket at ``url`` until it closes: what it got (``wsclients.Collected``)."""
    import websockets
    from wsclients import Collected, collect

    async with websockets.connect(url, max_size=None) as ws:
        return await collect(ws, Collected())
