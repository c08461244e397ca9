"""The operator's commands of ``mcustt``: serve, migrate, and tenants.

They run on this machine against the configured database (unlike the client commands
of :mod:`mcustt.client.cli`, which talk to a running server).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from mcustt import tenants as tenants_svc
from mcustt import wire
from mcustt.bodies import validate
from mcustt.config import Settings
from mcustt.errors import MCUSTTError
from mcustt.server import serve as serve_forever
from mcustt.store import db as store_db

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
    settings = _settings()

    async def main() -> T:
        db = store_db.Database(settings.database_url)
        try:
            await store_db.check_schema(db, migrate_on_start=False)
            return await fn(db)
        finally:
            await db.aclose()

    try:
        return asyncio.run(main())
    except MCUSTTError as exc:
        raise click.ClickException(exc.message) from None


@click.command()
@click.option("--host", default=None, help="Bind address (default MCUSTT_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default MCUSTT_PORT or 8000).")
@click.option("--migrate", is_flag=True, help="Apply database migrations before starting.")
def serve(host: str | None, port: int | None, migrate: bool) -> None:
    """Run the server."""
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
        store_db.migrate(settings.database_url)
    serve_forever(settings)


@click.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option("--down", is_flag=True, help="Downgrade to --revision instead (e.g. base).")
def migrate(revision: str, down: bool) -> None:
    """Create or upgrade the database schema (SQLite or PostgreSQL)."""
    settings = _settings()
    _refuse_newer_schema(settings.database_url)
    if down:
        store_db.downgrade(settings.database_url, revision)
        click.echo(f"database downgraded to {revision}")
    else:
        store_db.migrate(settings.database_url, revision)
        click.echo(
            f"database at revision {store_db.head_revision() if revision == 'head' else revision}"
        )


def _refuse_newer_schema(url: str) -> None:
    """A database migrated by a newer mcustt: say so instead of an Alembic traceback."""

    async def probe() -> None:
        db = store_db.Database(url)
        try:
            await store_db.check_schema(db, migrate_on_start=False)
        finally:
            await db.aclose()

    try:
        asyncio.run(probe())
    except store_db.SchemaMismatch as exc:
        if "newer" in exc.message:
            raise click.ClickException(exc.message) from None


@click.group()
def tenants() -> None:
    """Provision and manage tenants (an alternative to the admin API)."""


def _print_key(doc: wire.TenantWithKey, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(doc))
        return
    key = doc["apiKey"]
    console.print(f"tenant [bold]{doc['name']}[/] id [bold]{doc['tenantId']}[/]")
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
        body = validate(wire.TenantCreate, data)
    except MCUSTTError as exc:
        raise click.ClickException(exc.message) from None
    settings = _settings()
    tenant, key = _with_db(lambda db: tenants_svc.create(db, settings, body))
    _print_key(tenants_svc.tenant_with_key(tenant, key), as_json)


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True)
def tenants_list(as_json: bool) -> None:
    """List tenants (keys are never shown, only their prefix)."""
    rows = _with_db(tenants_svc.list_all)
    docs = [tenants_svc.tenant_json(t) for t in rows]
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
    tenant, key = _with_db(lambda db: tenants_svc.rotate_key(db, tenant_id))
    _print_key(tenants_svc.tenant_with_key(tenant, key), as_json)


@tenants.command("disable")
@click.argument("tenant_id")
def tenants_disable(tenant_id: str) -> None:
    """Disable a tenant: its key and tokens stop working."""
    _set_disabled(tenant_id, True)


@tenants.command("enable")
@click.argument("tenant_id")
def tenants_enable(tenant_id: str) -> None:
    """Re-enable a disabled tenant."""
    _set_disabled(tenant_id, False)


def _set_disabled(tenant_id: str, disabled: bool) -> None:
    change = wire.TenantUpdate(disabled=disabled)
    tenant = _with_db(lambda db: tenants_svc.update(db, tenant_id, change))
    click.echo(f"tenant {tenant.id} {'disabled' if disabled else 'enabled'}")
