"""``mcustt demo``: a server on the embedded defaults, in this process, captioning a
sample meeting through the Python client, as a user would.

Its own module (loaded only for this command) because it needs the whole server stack,
which the plain client commands must not pay for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import click
from rich.console import Console

from mcustt import errors as server_errors
from mcustt import tenants, wire
from mcustt.client.cli import SAMPLE, print_summary, run_async, stream_file
from mcustt.client.rest import Client
from mcustt.config import Settings
from mcustt.server import Server, uvicorn_config
from mcustt.store.db import migrate


def _read_key(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _save_key(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)  # a credential: readable by its owner only


async def _demo_tenant_key(state: Any, settings: Settings, key_file: Path) -> str:
    """The demo tenant's key: the one saved by an earlier demo if it still works, else a
    new tenant's (saved so repeated demos do not pile up tenants)."""
    key = await asyncio.to_thread(_read_key, key_file)
    if key:
        with contextlib.suppress(server_errors.Unauthorized):
            await tenants.authenticate(state.db, key)
            return key
    body = wire.TenantCreate(name="mcustt demo", brand=wire.Brand(brandName="mcustt demo"))
    _tenant, key = await tenants.create(state.db, settings, body)
    await asyncio.to_thread(_save_key, key_file, key)
    return key


async def _demo(
    *, host: str, port: int, sample: Path, realtime: bool, exit_after: bool, console: Console
) -> None:
    env = dict(os.environ)
    env.update({"MCUSTT_HOST": host, "MCUSTT_PORT": str(port)})
    # The demo's own output is the show: server logs only for problems, and two
    # recognizer workers rather than one per core, unless the user asked otherwise.
    env.setdefault("MCUSTT_LOG_LEVEL", "warning")
    env.setdefault("MCUSTT_RECOGNIZER_WORKERS", "2")
    settings = Settings.from_env(env)
    admin = settings.admin_token or secrets.token_urlsafe(24)
    settings = replace(settings, admin_token=admin)
    config = uvicorn_config(settings, host=host, port=port)
    server = Server(config)
    console.print(f"[bold]mcustt demo[/]: starting the server on {settings.public_url} …")
    served = asyncio.create_task(server.serve(), name="mcustt-demo-server")
    # uvicorn offers a flag, not an event, for "listening".
    while not server.started and not served.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if served.done():
        with contextlib.suppress(BaseException):
            served.result()
        raise click.ClickException(
            f"the server did not start on {host}:{port} (port in use? try --port)"
        )

    async def show() -> None:
        # The services exist once the server has started (its lifespan builds them).
        state = cast(Any, config.app).state.mcustt
        key = await _demo_tenant_key(state, settings, Path("var") / "demo-tenant-key")
        async with Client(settings.public_url, tenant_key=key) as client:
            session = await client.create_session(title="Demo: billing page standup")
            sid = session["sessionId"]
            console.print(f"session [bold]{sid}[/]; watch the captions page live:")
            click.echo(f"  {session['embedUrl']}")
            console.rule("live captions")
            await stream_file(client, sample, console=console, session=session, realtime=realtime)
            console.rule("transcript (txt; also json, srt, vtt)")
            click.echo(await client.transcript(sid, "txt"), nl=False)
            console.rule("summary")
            print_summary(console, await client.summary(sid, wait=True, max_wait=120))
            console.rule("try it yourself")
            tokens = await client.embed_token(sid)
            console.print("captions page (works after the meeting too):")
            click.echo(f"  {tokens['embedUrl']}")
            console.print("in another terminal:")
            click.echo(f"  export MCUSTT_URL={settings.public_url}")
            click.echo(f"  export MCUSTT_TENANT_KEY={key}")
            click.echo(f"  mcustt transcript {sid} --format srt")
            click.echo("  mcustt stream your-meeting.mp3")
            click.echo(f"  API docs: {settings.public_url}/docs")

    flow = asyncio.create_task(show(), name="mcustt-demo")
    try:
        # Ctrl-C makes uvicorn stop the server (should_exit); the demo stops with it,
        # and whatever the demo was doing fails because of that, not on its own.
        await asyncio.wait({flow, served}, return_when=asyncio.FIRST_COMPLETED)
        if flow.done() and not server.should_exit:
            flow.result()  # raise what went wrong
            if not exit_after:
                console.print(f"server running on {settings.public_url}; Ctrl-C stops it")
                await served
    finally:
        flow.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await flow  # its outcome was reported above, or does not matter any more
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await served


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--sample",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Audio or video file to stream instead of the bundled standup recording.",
)
@click.option("--fast", is_flag=True, help="Stream as fast as recognized, not in real time.")
@click.option(
    "--exit",
    "--no-wait",
    "exit_after",
    is_flag=True,
    help="Exit after printing instead of keeping the server running.",
)
def demo(host: str, port: int, sample: Path | None, fast: bool, exit_after: bool) -> None:
    """Run a server on the embedded defaults and caption a sample meeting.

    Migrates the SQLite database under ./var, starts the server in this process
    (offline recognizer, extractive summaries), provisions a demo tenant, streams a
    bundled standup recording with live captions, prints the transcript and the
    summary, and keeps serving with the captions page URL printed (Ctrl-C stops).
    """
    console = Console()
    try:
        # Synchronous (Alembic), so before the event loop starts.
        migrate(Settings.from_env().database_url)
    except server_errors.MCUSTTError as exc:
        raise click.ClickException(exc.message) from None
    try:
        run_async(
            _demo(
                host=host,
                port=port,
                sample=sample or SAMPLE,
                realtime=not fast,
                exit_after=exit_after,
                console=console,
            )
        )
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it handled once the server has stopped cleanly.
        console.print("server stopped")
