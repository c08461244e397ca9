"""Schema migrations on both databases, the start-up schema gate, and the shared JWT secret."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import create_pg_database, drop_pg_database, make_settings, run_server
from rest_helpers import client, create_session, create_tenant
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

import mcustt.store.models  # noqa: F401  (registers the tables)
from mcustt.app import create_app
from mcustt.config import ConfigError
from mcustt.store.db import (
    SchemaMismatch,
    async_url,
    downgrade,
    head_revision,
    migrate,
    sync_url,
)

TABLES = {"meta", "tenants", "sessions", "transcript_lines", "summaries", "jobs", "usage"}


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, never-migrated database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh.db"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


def tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def revision(url: str) -> str | None:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def schema_drift(url: str) -> list[object]:
    """Differences between the migrated schema and the models the code uses."""
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), SQLModel.metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(fresh_url: str) -> None:
    assert not TABLES & tables(fresh_url)
    migrate(fresh_url)
    assert tables(fresh_url) >= TABLES
    assert revision(fresh_url) == head_revision()
    assert schema_drift(fresh_url) == [], "models.py and alembic/versions disagree"

    downgrade(fresh_url, "base")
    assert not TABLES & tables(fresh_url)
    assert revision(fresh_url) is None

    migrate(fresh_url)
    assert tables(fresh_url) >= TABLES
    assert revision(fresh_url) == head_revision()
    migrate(fresh_url)  # idempotent at head
    assert revision(fresh_url) == head_revision()


async def start(url: str, **overrides: object) -> None:
    """Run the real lifespan start-up (and shutdown) of an app on ``url``."""
    app = create_app(make_settings(url, **overrides), configure_logs=False)
    # A start-up that fails closes what it had opened (the database) itself.
    async with app.router.lifespan_context(app):
        pass


async def test_refuses_to_start_on_an_unmigrated_database(fresh_url: str) -> None:
    with pytest.raises(SchemaMismatch) as caught:
        await start(fresh_url)
    assert "mcustt migrate" in caught.value.message
    assert "not migrated" in caught.value.message
    assert not TABLES & tables(fresh_url), "a refused start must not create tables"


async def test_refuses_to_start_on_a_newer_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/newer.db"
    migrate(url)
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    with pytest.raises(SchemaMismatch) as caught:
        await start(url)
    assert "9999_from_the_future" in caught.value.message
    assert "newer" in caught.value.message
    # ...even when told to migrate: there is nothing this version can do with it.
    with pytest.raises(SchemaMismatch):
        await start(url, migrate_on_start=True)
    assert revision(url) == "9999_from_the_future"


def test_serve_exits_with_a_message_naming_migrate(tmp_path: Path) -> None:
    env = os.environ | {
        "MCUSTT_DATABASE_URL": f"sqlite:///{tmp_path}/unmigrated.db",
        "MCUSTT_RECOGNIZER": "null",
        "MCUSTT_PORT": "0",
        "MCUSTT_LOG_LEVEL": "info",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "mcustt", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "mcustt migrate" in proc.stdout + proc.stderr


async def test_migrate_on_start_migrates(fresh_url: str) -> None:
    settings = make_settings(fresh_url, migrate_on_start=True)
    async with run_server(settings) as srv, client(srv) as c:
        t = await create_tenant(c)
        await create_session(c, t["apiKey"])
    assert revision(fresh_url) == head_revision()


async def test_nodes_on_one_database_verify_each_others_tokens(fresh_url: str) -> None:
    """The JWT secret is generated once, in the database, even when nodes start together."""
    migrate(fresh_url)
    async with contextlib.AsyncExitStack() as stack:
        a, b = await asyncio.gather(
            stack.enter_async_context(run_server(make_settings(fresh_url))),
            stack.enter_async_context(run_server(make_settings(fresh_url))),
        )
        async with client(a) as ca, client(b) as cb:
            t = await create_tenant(ca)
            doc = await create_session(ca, t["apiKey"])
            sid = doc["sessionId"]
            r = await cb.get(f"/api/sessions/{sid}", params={"t": doc["embedToken"]})
            assert r.status_code == 200, r.text
            # ...and the other way round, with a token node B minted.
            r = await cb.post(
                f"/api/sessions/{sid}/embed-token", json={"ownerSecret": doc["ownerSecret"]}
            )
            assert r.status_code == 200, r.text
            r = await ca.get(
                f"/api/sessions/{sid}/transcript", params={"t": r.json()["embedToken"]}
            )
            assert r.status_code == 200, r.text

    # A restarted node still honours links handed out before the restart.
    async with run_server(make_settings(fresh_url)) as c_node, client(c_node) as cc:
        r = await cc.get(f"/api/sessions/{sid}", params={"t": doc["embedToken"]})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("given", "sync", "asyncio_"),
    [
        (
            "postgres://u:p%40ss@db.example:5433/app",  # Heroku-style scheme, quoted password
            "postgresql+psycopg://u:p%40ss@db.example:5433/app",
            "postgresql+psycopg://u:p%40ss@db.example:5433/app",
        ),
        (
            "postgresql://u@h/app?sslmode=require",
            "postgresql+psycopg://u@h/app?sslmode=require",
            "postgresql+psycopg://u@h/app?sslmode=require",
        ),
        ("sqlite:///./var/m.db", "sqlite+pysqlite:///./var/m.db", "sqlite+aiosqlite:///./var/m.db"),
    ],
)
def test_database_urls_as_operators_write_them(given: str, sync: str, asyncio_: str) -> None:
    assert sync_url(given) == sync
    assert async_url(given) == asyncio_


def test_unsupported_database_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="sqlite:/// or postgresql://"):
        sync_url("mysql://u@h/app")
