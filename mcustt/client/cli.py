"""Client commands of ``mcustt``: stream, tail, sessions, transcript, summary.

They talk to a running server through :mod:`mcustt.client` (unlike ``mcustt tenants``,
which operates on the database directly). The server and the tenant key come from
``--url`` / ``--key`` or ``MCUSTT_URL`` / ``MCUSTT_TENANT_KEY``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

import click
import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from mcustt import wire
from mcustt.client.audio import audio_duration
from mcustt.client.errors import MCUSTTClientError
from mcustt.client.rest import DEFAULT_URL, Client
from mcustt.client.sockets import Event

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "standup_en.wav"
FORMATS = ("json", "srt", "vtt", "txt")


# -- shared plumbing -----------------------------------------------------------------------


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; server errors become one readable line, not a trace."""
    try:
        return asyncio.run(coro)
    except MCUSTTClientError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    except httpx.ConnectError as exc:
        raise click.ClickException(
            f"cannot reach the server ({exc}); is it running (mcustt serve), and is "
            "--url / MCUSTT_URL right?"
        ) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


def url_option(f: F) -> F:
    return click.option(
        "--url",
        envvar="MCUSTT_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Server URL (env MCUSTT_URL).",
    )(f)


def key_option(f: F) -> F:
    return click.option(
        "--key",
        envvar="MCUSTT_TENANT_KEY",
        default=None,
        help="Tenant API key (env MCUSTT_TENANT_KEY).",
    )(f)


def _need_key(key: str | None) -> str:
    if not key:
        raise click.UsageError("a tenant key is needed: --key or MCUSTT_TENANT_KEY")
    return key


def _echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


class Captions:
    """Live captions in the terminal: finals are printed and kept; the interim line
    (and an optional progress bar) is redrawn in place below them by rich's Live."""

    def __init__(self, console: Console, *, total_s: float | None = None, label: str = "") -> None:
        self.console = console
        self.interim = Text("", style="italic dim")
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        if label:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[sent]}"),
                TimeElapsedColumn(),
                console=console,
            )
            self.task = self.progress.add_task(label, total=total_s, sent="")
        parts: list[Any] = [self.interim]
        if self.progress is not None:
            parts.append(self.progress)
        # transient: the interim line and the bar vanish at the end; finals stay.
        self.live = Live(Group(*parts), console=console, transient=True, refresh_per_second=10)
        self.finals = 0
        #: the line being written per speaker id ("": the mixed producer): two people
        #: talking at once are two live lines
        self.interims: dict[str, str] = {}
        #: speaker id -> name, as the latest ``speaker`` event (or a line) said
        self.names: dict[str, str] = {}

    def __enter__(self) -> Captions:
        self.live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.live.__exit__(exc_type, exc, tb)

    def advance(self, seconds: float) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=seconds, sent=f"{seconds:5.1f} s")

    def _speaker(self, event: Event) -> tuple[str, str]:
        """(speaker id, "Name: ") of a transcript event; ("", "") without a speaker."""
        speaker = event.data.get("speaker")
        if not isinstance(speaker, dict) or not isinstance(speaker.get("id"), str):
            return "", ""
        sid = speaker["id"]
        name = self.names.setdefault(sid, str(speaker.get("name") or sid))
        return sid, f"{name}: "

    def on_event(self, event: Event) -> None:
        if event.is_final:
            self.finals += 1
            key, who = self._speaker(event)
            self.interims.pop(key, None)
            self._show_interims()
            lang = f" [dim]{escape(event.lang)}[/]" if event.lang else ""
            self.live.console.print(
                f"[dim]{event.seq or 0:>4}[/]{lang} [bold]{escape(who)}[/]{escape(event.text)}"
            )
        elif event.is_revised:
            # A printed line cannot be edited: the correction is printed under its seq.
            self.live.console.print(f"[dim]{event.seq or 0:>4} corrected:[/] {escape(event.text)}")
        elif event.is_transcript:
            key, who = self._speaker(event)
            self.interims[key] = who + event.text
            self._show_interims()
        elif event.type == "speaker":
            speaker = event.data.get("speaker")
            if isinstance(speaker, dict) and isinstance(speaker.get("id"), str):
                self.names[speaker["id"]] = str(speaker.get("name") or speaker["id"])
        elif event.type == "language":
            self.live.console.print(f"[cyan]language: {escape(str(event.data.get('code')))}[/]")
        elif event.type == "error":
            self.live.console.print(
                f"[red]{escape(str(event.data.get('code')))}: "
                f"{escape(str(event.data.get('message')))}[/]"
            )
        self.live.refresh()

    def _show_interims(self) -> None:
        self.interim.plain = "\n".join("… " + line for line in self.interims.values() if line)


def print_summary(console: Console, doc: wire.Summary | wire.SummaryPending) -> None:
    if doc["status"] != "ready":
        error = doc.get("error")
        console.print(
            f"summary: [yellow]{doc['status']}[/]" + (f" ({escape(error)})" if error else "")
        )
        return
    content = doc["content"]
    console.print("[bold]Summary[/]")
    console.print(escape(content["tldr"] or "(nothing to summarize)"))
    for title, items in (
        ("Decisions", content["decisions"]),
        (
            "Action items",
            [
                f"{a['owner']}: {a['task']}" if a["owner"] else a["task"]
                for a in content["actionItems"]
            ],
        ),
        ("Q&A", content["qa"]),
    ):
        if items:
            console.print(f"[bold]{title}[/]")
            for item in items:
                console.print(f"  • {escape(item)}")


# -- stream --------------------------------------------------------------------------------


async def stream_file(
    client: Client,
    path: Path,
    *,
    console: Console,
    session: wire.SessionCreated,
    realtime: bool,
    stop: bool = True,
    failover: Sequence[str] = (),
) -> int:
    """Stream a file into ``session`` with live captions; returns the number of finals.
    ``failover``: other nodes' URLs to continue on if this one goes away."""
    total = audio_duration(path)
    with Captions(console, total_s=total, label=path.name) as captions:
        producer = client.producer(
            session, realtime=realtime, on_event=captions.on_event, failover=failover
        )
        async with producer:
            await producer.send_file(path, progress=captions.advance)
            if stop:
                await producer.stop()
    if producer.reconnects:
        lost = (
            f", {producer.frames_dropped * 20} ms of audio dropped"
            if producer.frames_dropped
            else ", no audio lost"
        )
        moved = f" ({producer.failovers} to another node)" if producer.failovers else ""
        console.print(f"[yellow]reconnected {producer.reconnects} time(s){moved}{lost}[/]")
    return len(producer.finals)


@click.command("stream")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@url_option
@key_option
@click.option("--title", default=None, help="Session title.")
@click.option("--lang", "source_lang", default=None, help="Source language, e.g. en-US.")
@click.option("--no-auto-detect", is_flag=True, help="Do not auto-detect the language.")
@click.option("--fast", is_flag=True, help="Send as fast as the server reads (not real time).")
@click.option("--keep-live", is_flag=True, help="Do not end the session after the file.")
@click.option(
    "--failover-url",
    "failover",
    multiple=True,
    help="Another node of the deployment to continue on if --url's goes away (repeatable).",
)
def stream(
    file: Path,
    url: str,
    key: str | None,
    title: str | None,
    source_lang: str | None,
    no_auto_detect: bool,
    fast: bool,
    keep_live: bool,
    failover: tuple[str, ...],
) -> None:
    """Stream an audio or video FILE (anything FFmpeg reads) and show live captions.

    Creates a session, sends the audio as PCM16 16 kHz mono in 20 ms frames, prints
    each final line as it comes (the line being recognized is updated in place), then
    ends the session so its summary is generated.
    """
    console = Console()

    async def main() -> None:
        async with Client(url, tenant_key=_need_key(key)) as client:
            session = await client.create_session(
                title=title or file.stem, source_lang=source_lang, auto_detect=not no_auto_detect
            )
            sid = session["sessionId"]
            console.print(f"session [bold]{sid}[/]; live captions page:")
            # Plain echo: a long URL must not be wrapped (it would not paste).
            click.echo(f"  {session['embedUrl']}")
            n = await stream_file(
                client,
                file,
                console=console,
                session=session,
                realtime=not fast,
                stop=not keep_live,
                failover=failover,
            )
            state = "live" if keep_live else "ended"
            console.print(f"{n} final lines; session {sid} {state}")
            click.echo(f"next: mcustt transcript {sid} --format srt")
            click.echo(f"      mcustt summary {sid} --wait")

    run_async(main())


# -- tail ----------------------------------------------------------------------------------


@click.command("tail")
@click.argument("session_id")
@url_option
@key_option
@click.option("--token", default=None, help="A subscribe/embed token (else minted with the key).")
@click.option(
    "--from-start/--live-only",
    default=True,
    show_default=True,
    help="Replay the finals so far first, or only follow from now.",
)
@click.option("--json", "as_json", is_flag=True, help="Print each event as a JSON line.")
def tail(
    session_id: str, url: str, key: str | None, token: str | None, from_start: bool, as_json: bool
) -> None:
    """Follow a session's captions until it ends (reconnects without losing a line)."""
    if token is None:
        _need_key(key)
    console = Console()

    async def main() -> None:
        async with Client(url, tenant_key=key) as client:
            viewer = client.viewer(session_id, token=token, last_seq=0 if from_start else None)
            if as_json:
                async for event in viewer:
                    click.echo(json.dumps(event.data, ensure_ascii=False))
                return
            with Captions(console) as captions:
                async for event in viewer:
                    captions.on_event(event)
            console.print(f"session {session_id} ended ({captions.finals} final lines)")

    run_async(main())


# -- sessions ------------------------------------------------------------------------------


@click.group("sessions")
def sessions() -> None:
    """Create, inspect and end sessions (through the REST API)."""


@sessions.command("create")
@url_option
@key_option
@click.option("--title", default=None)
@click.option("--lang", "source_lang", default=None, help="Source language, e.g. en-US.")
@click.option("--no-auto-detect", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer as JSON.")
def sessions_create(
    url: str,
    key: str | None,
    title: str | None,
    source_lang: str | None,
    no_auto_detect: bool,
    as_json: bool,
) -> None:
    """Create a session; prints its id, URLs and owner secret (shown once)."""

    async def main() -> wire.SessionCreated:
        async with Client(url, tenant_key=_need_key(key)) as client:
            return await client.create_session(
                title=title, source_lang=source_lang, auto_detect=not no_auto_detect
            )

    doc = run_async(main())
    if as_json:
        _echo_json(doc)
        return
    # Plain echo: ids, URLs and secrets must copy cleanly, without wrapping or markup.
    for name in ("sessionId", "ingestUrl", "embedUrl", "subscribeUrl", "ownerSecret"):
        click.echo(f"{name}: {doc[name]}")


@sessions.command("show")
@click.argument("session_id")
@url_option
@key_option
@click.option("--token", default=None, help="A read token instead of the tenant key.")
@click.option("--json", "as_json", is_flag=True)
def sessions_show(
    session_id: str, url: str, key: str | None, token: str | None, as_json: bool
) -> None:
    """Show a session's state."""
    if token is None:
        _need_key(key)

    async def main() -> wire.SessionState:
        async with Client(url, tenant_key=key) as client:
            return await client.get_session(session_id, token=token)

    doc = run_async(main())
    if as_json:
        _echo_json(doc)
        return
    width = max(len(k) for k in doc)
    for name, value in doc.items():
        click.echo(f"{name:<{width}}  {json.dumps(value, ensure_ascii=False)}")


@sessions.command("list")
@url_option
@key_option
@click.option("--status", type=click.Choice(["live", "ended"]), default=None)
@click.option("--json", "as_json", is_flag=True)
def sessions_list(url: str, key: str | None, status: str | None, as_json: bool) -> None:
    """List the tenant's sessions, newest first."""

    async def main() -> list[wire.SessionListItem]:
        async with Client(url, tenant_key=_need_key(key)) as client:
            return await client.list_sessions(cast(wire.SessionStatus | None, status))

    rows = run_async(main())
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        title = row["title"] or ""
        click.echo(f"{row['sessionId']}  {row['status']:<5}  last seq {row['lastSeq']:<5} {title}")


@sessions.command("end")
@click.argument("session_id")
@url_option
@key_option
@click.option("--owner-secret", default=None, help="The owner secret instead of the tenant key.")
def sessions_end(session_id: str, url: str, key: str | None, owner_secret: str | None) -> None:
    """End a session (idempotent); its summary is then generated."""
    if owner_secret is None:
        _need_key(key)

    async def main() -> wire.SessionState:
        async with Client(url, tenant_key=key) as client:
            return await client.end_session(session_id, owner_secret=owner_secret)

    state = run_async(main())
    click.echo(f"session {session_id} {state['status']} ({state['lineCount']} lines)")


# -- transcript and summary ----------------------------------------------------------------


@click.command("transcript")
@click.argument("session_id")
@url_option
@key_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="txt", show_default=True)
@click.option("--token", default=None, help="A read token instead of the tenant key.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of stdout.",
)
def transcript(
    session_id: str, url: str, key: str | None, fmt: str, token: str | None, output: Path | None
) -> None:
    """Download a session's transcript as json, srt, vtt or txt."""
    if token is None:
        _need_key(key)

    async def main() -> str:
        async with Client(url, tenant_key=key) as client:
            if fmt == "json":
                doc = await client.transcript(session_id, "json", token=token)
                return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
            kind = cast(Literal["srt", "vtt", "txt"], fmt)
            return await client.transcript(session_id, kind, token=token)

    text = run_async(main())
    if output is not None:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@click.command("summary")
@click.argument("session_id")
@url_option
@key_option
@click.option("--wait", is_flag=True, help="Wait until the summary is ready (or failed).")
@click.option("--max-wait", type=float, default=120.0, show_default=True, help="Seconds.")
@click.option("--token", default=None, help="A read token instead of the tenant key.")
@click.option("--json", "as_json", is_flag=True)
def summary(
    session_id: str,
    url: str,
    key: str | None,
    wait: bool,
    max_wait: float,
    token: str | None,
    as_json: bool,
) -> None:
    """Show a session's summary (tl;dr, decisions, action items, Q&A)."""
    if token is None:
        _need_key(key)

    async def main() -> wire.Summary | wire.SummaryPending:
        async with Client(url, tenant_key=key) as client:
            return await client.summary(session_id, wait=wait, max_wait=max_wait, token=token)

    try:
        doc = run_async(main())
    except TimeoutError:
        raise click.ClickException(f"the summary was not ready after {max_wait:g} s") from None
    if as_json:
        _echo_json(doc)
    else:
        print_summary(Console(), doc)
    if doc["status"] == "failed":
        raise SystemExit(1)
