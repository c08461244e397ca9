"""The database handle: URL handling, the async engine, and the schema-revision gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from alembic import command
from mcustt.config import ConfigError
from mcustt.resources import ALEMBIC_DIR
from mcustt.wire import ErrorCode

log = structlog.get_logger(__name__)

#: seconds a PostgreSQL connection attempt may take (libpq's minimum is 2)
CONNECT_TIMEOUT_S = 3


def sync_url(url: str) -> str:
    """The URL with a synchronous driver (Alembic, CLI)."""
    return _with_driver(url, sync=True)


def async_url(url: str) -> str:
    """The URL with an asyncio driver (the server)."""
    return _with_driver(url, sync=False)


def _with_driver(url: str, *, sync: bool) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        driver = "pysqlite" if sync else "aiosqlite"
    elif backend == "postgresql":
        driver = "psycopg"  # psycopg 3 speaks both sync and asyncio
    else:
        raise ConfigError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return parsed.set(drivername=f"{backend}+{driver}").render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a SQLite file (the default lives under ./var/)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers proceed during a write; busy_timeout makes concurrent writers
    # (several tasks, or several processes on one file) wait instead of failing.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    """Owns the async engine; hand out sessions with :meth:`session`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        ensure_sqlite_dir(url)
        kwargs: dict[str, Any] = {}
        if not self.sqlite:
            # issue 13: pre-ping drops connections a restart cut; a short connect timeout
            # makes an unreachable server fail fast (503, /readyz) instead of hanging.
            kwargs.update(
                pool_size=10,
                max_overflow=20,
                pool_pre_ping=True,
                connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
            )
        self.engine: AsyncEngine = create_async_engine(async_url(url), **kwargs)
        if self.sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as s:
            yield s

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def revision(self) -> str | None:
        """The Alembic revision stamped in the database (None = never migrated)."""

        def read(conn: Connection) -> str | None:
            return MigrationContext.configure(conn).get_current_revision()

        async with self.engine.connect() as conn:
            return await conn.run_sync(read)

    async def aclose(self) -> None:
        await self.engine.dispose()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "alembic/versions has no revision"
    return head


def known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {rev.revision for rev in script.walk_revisions()}


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade (synchronously; call from a thread when inside an event loop)."""
    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


class SchemaMismatch(ConfigError):
    code = ErrorCode.SCHEMA_MISMATCH


async def check_schema(db: Database, *, migrate_on_start: bool) -> None:
    """Refuse to run on an unmigrated or newer database, or migrate when told to."""
    current = await db.revision()
    head = head_revision()
    if current == head:
        return
    if current is not None and current not in known_revisions():
        raise SchemaMismatch(
            f"the database is at schema revision {current}, newer than this mcustt "
            f"knows (head {head}); upgrade mcustt instead of starting an older one"
        )
    if not migrate_on_start:
        state = "not migrated" if current is None else f"at revision {current}, head is {head}"
        raise SchemaMismatch(
            f"the database is {state}: run `mcustt migrate` "
            "(or start with MCUSTT_MIGRATE_ON_START=true)"
        )
    log.info("migrating database at start", current=current, head=head)
    await asyncio.to_thread(migrate, db.url)
