"""The ``mcustt`` command: serve, migrate, and operator tasks (tenants)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from mcustt import __version__, wire
from mcustt.config import Settings
from mcustt.errors import MCUSTTError

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except MCUSTTError as exc:
        raise click.ClickException(exc.message) from None


def _with_db(fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn(db)`` against the configured database (must be migrated)."""
    from mcustt.store.db import Database, check_schema

    settings = _settings()

    async def main() -> T:
        db = Database(settings.database_url)
        try:
            await check_schema(db, migrate_on_start=False)
            return await fn(db)
        finally:
            await db.aclose()

    try:
        return asyncio.run(main())
    except MCUSTTError as exc:
        raise click.ClickException(exc.message) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mcustt")
def main() -> None:
    """mcustt: live captioning server for conferencing MCUs and browsers."""


@main.command()
@click.option("--host", default=None, help="Bind address (default MCUSTT_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default MCUSTT_PORT or 8000).")
@click.option("--migrate", is_flag=True, help="Apply database migrations before starting.")
def serve(host: str | None, port: int | None, migrate: bool) -> None:
    """Run the server."""
    from mcustt.server import serve as run
    from mcustt.store.db import migrate as do_migrate

    settings = _settings()
    if host or port:
        # Re-derive the default public URL from the address actually served.
        settings = Settings.from_env(
            {
                **os.environ,
                "MCUSTT_HOST": host or settings.host,
                "MCUSTT_PORT": str(port or settings.port),
            }
        )
    if migrate:
        do_migrate(settings.database_url)
    run(settings)


@main.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option("--down", is_flag=True, help="Downgrade to --revision instead (e.g. base).")
def migrate(revision: str, down: bool) -> None:
    """Create or upgrade the database schema (SQLite or PostgreSQL)."""
    from mcustt.store.db import downgrade, head_revision
    from mcustt.store.db import migrate as upgrade

    settings = _settings()
    _refuse_newer_schema(settings.database_url)
    if down:
        downgrade(settings.database_url, revision)
        click.echo(f"database downgraded to {revision}")
    else:
        upgrade(settings.database_url, revision)
        click.echo(f"database at revision {head_revision() if revision == 'head' else revision}")


def _refuse_newer_schema(url: str) -> None:
    """A database migrated by a newer mcustt: say so instead of an Alembic traceback."""
    from mcustt.store.db import Database, SchemaMismatch, check_schema

    async def probe() -> None:
        db = Database(url)
        try:
            await check_schema(db, migrate_on_start=False)
        finally:
            await db.aclose()

    try:
        asyncio.run(probe())
    except SchemaMismatch as exc:
        if "newer" in exc.message:
            raise click.ClickException(exc.message) from None


@main.group()
def tenants() -> None:
    """Provision and manage tenants (an alternative to the admin API)."""


def _print_key(tenant_json: wire.Tenant, key: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({**tenant_json, "apiKey": key, "note": "shown once"}))
        return
    console.print(f"tenant [bold]{tenant_json['name']}[/] id [bold]{tenant_json['tenantId']}[/]")
    console.print("API key (shown once, store it now):")
    # Plain echo, not rich: the key must copy cleanly, without wrapping or markup.
    click.echo(key)


@tenants.command("create")
@click.argument("name")
@click.option("--max-sessions", type=int, default=None)
@click.option("--daily-minutes", type=int, default=None, help="dailyMinutesCap")
@click.option("--brand-name", default=None)
@click.option("--accent-color", default=None)
@click.option("--logo-url", default=None)
@click.option("--origin", "origins", multiple=True, help="Allowed browser origin (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tenants_create(
    name: str,
    max_sessions: int | None,
    daily_minutes: int | None,
    brand_name: str | None,
    accent_color: str | None,
    logo_url: str | None,
    origins: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a tenant and print its API key once."""
    from mcustt import tenants as svc
    from mcustt.bodies import validate
    from mcustt.wire import TenantCreate

    brand = {"brandName": brand_name, "accentColor": accent_color, "logoUrl": logo_url}
    data: dict[str, Any] = {
        "name": name,
        "maxSessions": max_sessions,
        "dailyMinutesCap": daily_minutes,
    }
    if any(brand.values()):
        data["brand"] = brand
    if origins:
        data["allowedOrigins"] = list(origins)
    try:
        body = validate(TenantCreate, data)
    except MCUSTTError as exc:
        raise click.ClickException(exc.message) from None
    settings = _settings()
    tenant, key = _with_db(lambda db: svc.create(db, settings, body))
    _print_key(svc.tenant_json(tenant), key, as_json)


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True)
def tenants_list(as_json: bool) -> None:
    """List tenants (keys are never shown, only their prefix)."""
    from mcustt import tenants as svc

    rows = _with_db(svc.list_all)
    docs = [svc.tenant_json(t) for t in rows]
    if as_json:
        click.echo(json.dumps(docs))
        return
    table = Table("id", "name", "maxSessions", "dailyMinutesCap", "disabled", "key")
    for d in docs:
        table.add_row(
            d["tenantId"],
            d["name"],
            str(d["maxSessions"]),
            str(d["dailyMinutesCap"]),
            "yes" if d["disabled"] else "",
            d["keyPrefix"],
        )
    console.print(table)


@tenants.command("rotate-key")
@click.argument("tenant_id")
@click.option("--json", "as_json", is_flag=True)
def tenants_rotate(tenant_id: str, as_json: bool) -> None:
    """Replace a tenant's API key (the old one stops working) and print the new one."""
    from mcustt import tenants as svc

    tenant, key = _with_db(lambda db: svc.rotate_key(db, tenant_id))
    _print_key(svc.tenant_json(tenant), key, as_json)


@tenants.command("disable")
@click.argument("tenant_id")
def tenants_disable(tenant_id: str) -> None:
    """Disable a tenant: its key and tokens stop working."""
    from mcustt import tenants as svc
    from mcustt.wire import TenantUpdate

    tenant = _with_db(lambda db: svc.update(db, tenant_id, TenantUpdate(disabled=True)))
    click.echo(f"tenant {tenant.id} disabled")


@tenants.command("enable")
@click.argument("tenant_id")
def tenants_enable(tenant_id: str) -> None:
    """Re-enable a disabled tenant."""
    from mcustt import tenants as svc
    from mcustt.wire import TenantUpdate

    tenant = _with_db(lambda db: svc.update(db, tenant_id, TenantUpdate(disabled=False)))
    click.echo(f"tenant {tenant.id} enabled")


# Client commands (stream, tail, sessions, transcript, summary, demo) talk to a running
# server through mcustt.client; they live in its cli module.
from mcustt.client.cli import COMMANDS as _CLIENT_COMMANDS  # noqa: E402

for _command in _CLIENT_COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
