"""Shared pieces of ``bench_ingest.py`` and ``bench_fanout.py`` (not part of the package).

* lean asyncio clients (a raw RFC 6455 WebSocket client with pre-masked frames, and a
  chunked-HTTP SSE reader), so that client processes spend as little of the machine's
  two cores as possible;
* process accounting from ``/proc`` (utime+stime, RSS, descendants);
* starting and stopping server processes (``python -m mcustt serve`` and the bare
  baselines below), each under exactly :func:`mcustt.server.uvicorn_options`;
* the bare baselines, run as ``python scripts/benchlib.py echo|broadcast --port N``:

  - ``echo``: a WebSocket app that answers ``{"type":"ping","ts":..}`` with
    ``{"type":"pong","ts":..}`` and discards everything else;
  - ``broadcast``: subscribes to the session channels in Redis and writes each message
    to every open socket of that session (WebSocket text frame, or an SSE ``data:``
    event on a streaming HTTP response), nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PYTHON = sys.executable
ADMIN = "bench-admin-" + os.urandom(6).hex()
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# --------------------------------------------------------------------------- the host


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (servers and clients hold many sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ephemeral_ports() -> int:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(hi) - int(lo) + 1
    except OSError:
        return 28_000


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_split(pid: int) -> tuple[float, float, int]:
    """(utime s, stime s, minor page faults) of a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0, 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK, int(fields[7])


async def py_spy(pid: int, seconds: float, out: str) -> asyncio.subprocess.Process:
    """Start sampling ``pid`` for ``seconds`` into ``out`` (py-spy raw format: collapsed
    stacks, for flame graphs or a quick count); await ``.wait()`` on the result."""
    return await asyncio.create_subprocess_exec(
        str(Path(PYTHON).parent / "py-spy"),
        "record",
        "--nonblocking",
        "--format",
        "raw",
        "-d",
        str(int(seconds)),
        "-p",
        str(pid),
        "-o",
        out,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def settle(pids: Sequence[int], *, below: float = 0.05, limit_s: float = 120.0) -> float:
    """Wait until every process uses < ``below`` of a core over a 1 s interval (connection
    set-up work done), at most ``limit_s``; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = [cpu_seconds(p) for p in pids]
        await asyncio.sleep(1.0)
        if all(cpu_seconds(p) - b < below for p, b in zip(pids, before, strict=True)):
            break
    return time.monotonic() - started


def syscalls(pid: int) -> tuple[int, int]:
    """(read-like, write-like) system calls of a process so far (``/proc/<pid>/io``)."""
    try:
        fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    except OSError:
        return 0, 0
    return int(fields["syscr"]), int(fields["syscw"])


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (e.g. recognizer workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def host_cpu() -> list[int]:
    """The host's aggregate CPU counters (``/proc/stat``): user .. steal, in ticks."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def steal_pct(before: list[int], after: list[int]) -> float:
    """Share of CPU time the hypervisor gave to others (noise the VM cannot see)."""
    d = [b - a for a, b in zip(before, after, strict=True)]
    return 100 * d[7] / (sum(d) or 1)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    k = (len(data) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join("-" * w for w in widths)
    out = [title] if title else []
    out.append(
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    out.append(line)
    for r in rows:
        out.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- processes


def spawn_mcustt(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m mcustt serve`` as an operator runs it."""
    full = {
        **os.environ,
        "MCUSTT_ADMIN_TOKEN": ADMIN,
        "MCUSTT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "MCUSTT_LOG_LEVEL": "warning",
        "MCUSTT_RATE_WS_UPGRADE": "10000000/minute",
        "MCUSTT_RATE_CREATE_SESSION": "10000000/minute",
        "MCUSTT_MAX_CONCURRENT_INGEST": "100000",
        "MCUSTT_DEFAULT_MAX_SESSIONS": "100000",
        **env,
    }
    full["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", ""), os.environ.get("PYTHONPATH", "")) if p
    )
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [PYTHON, "-c", _SERVE_SNIPPET, str(port)],
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


#: ``python -m mcustt serve`` after raising RLIMIT_NOFILE (a server holds one fd a socket).
_SERVE_SNIPPET = """
import resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
from mcustt.cli import main
main(["serve", "--port", sys.argv[1]])
"""


def spawn_bare(kind: str, port: int, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [PYTHON, str(Path(__file__).resolve()), kind, "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


async def wait_http(
    port: int, proc: subprocess.Popen[bytes], log_path: Path, path: str = "/healthz"
) -> None:
    """Until ``GET path`` answers (any status); raises if the process died or 60 s pass."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            line = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            if line.startswith(b"HTTP/1.1"):
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"server did not start: {log_path.read_text()[-3000:]}")


def stop_proc(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def migrate_sqlite(path: Path) -> str:
    from mcustt.store.db import migrate

    url = f"sqlite:///{path}"
    migrate(url)
    return url


def create_pg_database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    from mcustt.store.db import migrate

    migrate(url)
    return url


def drop_pg_database(admin_url: str, name: str) -> None:
    import psycopg

    with (
        contextlib.suppress(Exception),
        psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn,
    ):
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def provision(
    base_url: str, count: int, *, name: str, concurrency: int = 8
) -> tuple[str, list[dict[str, Any]]]:
    """A tenant with room for ``count`` sessions, and ``count`` sessions of it."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as c:
        r = await c.post(
            "/api/admin/tenants",
            json={"name": name, "maxSessions": 100_000, "dailyMinutesCap": 10_000_000},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
        r.raise_for_status()
        key = str(r.json()["apiKey"])
        sem = asyncio.Semaphore(concurrency)

        async def one() -> dict[str, Any]:
            async with sem:
                resp = await c.post(
                    "/api/sessions", json={"sourceLang": "en-US"}, headers={"x-tenant-key": key}
                )
                resp.raise_for_status()
                doc: dict[str, Any] = resp.json()
                return doc

        sessions = await asyncio.gather(*(one() for _ in range(count)))
    return key, list(sessions)


# --------------------------------------------------------------------------- WebSocket client


def xor_mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    rep = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(rep, "little")).to_bytes(n, "little")


def client_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """A complete masked client frame (FIN set)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + key + xor_mask(payload, key)


class WSClient(asyncio.Protocol):
    """A minimal RFC 6455 client: HTTP upgrade, masked sends, unmasked receives.

    Binary frames can be pre-built once (:func:`client_frame`) and written as-is, so a
    20 ms audio frame costs one ``transport.write``. Text messages go to ``on_text``;
    server pings are answered; a close is echoed.
    """

    def __init__(self, on_text: Callable[[bytes], None], key: bytes) -> None:
        self.on_text = on_text
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        loop = asyncio.get_running_loop()
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None
        self.status = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed before upgrade: {self.status!r}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in self.status + b" ":
                self.upgraded.set_exception(ConnectionError(self.status.decode(errors="replace")))
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded.set_result(None)
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            size, head = b1 & 0x7F, 2
            if size == 126:
                if n - pos < 4:
                    break
                size, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if n - pos < head + size:
                break
            payload = bytes(buf[pos + head : pos + head + size])
            pos += head + size
            opcode = b0 & 0x0F
            if opcode == 1 or opcode == 0:
                self.on_text(payload)
            elif opcode == 9:
                self.write(client_frame(10, payload, self.key))
            elif opcode == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.write(client_frame(8, payload[:2], self.key))
                assert self.transport is not None
                self.transport.close()
        del buf[:pos]

    def write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def send_text(self, text: str) -> None:
        self.write(client_frame(1, text.encode(), self.key))

    async def close(self, code: int = 1000, timeout: float = 2.0) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.write(client_frame(8, code.to_bytes(2, "big"), self.key))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        self.transport.close()


async def ws_connect(
    port: int,
    path: str,
    on_text: Callable[[bytes], None],
    key: bytes,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> WSClient:
    loop = asyncio.get_running_loop()
    transport, proto = await asyncio.wait_for(
        loop.create_connection(lambda: WSClient(on_text, key), "127.0.0.1", port), timeout
    )
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    nonce = base64.b64encode(os.urandom(16)).decode()
    transport.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra}\r\n"
        ).encode()
    )
    try:
        await asyncio.wait_for(asyncio.shield(proto.upgraded), timeout)
    except BaseException:
        transport.close()
        raise
    return proto


# --------------------------------------------------------------------------- SSE client


class SSEClient(asyncio.Protocol):
    """GET a ``text/event-stream`` and hand each event's ``data:`` payload to ``on_data``.

    Understands chunked transfer encoding (what uvicorn sends for a streaming body) and
    both ``\\r\\n`` and ``\\n`` line ends; comments (``: ping``) are skipped.
    """

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self.on_data = on_data
        self.transport: asyncio.Transport | None = None
        self.raw = bytearray()
        self.body = bytearray()
        self.chunked = False
        self.need = -1  # bytes of the current chunk still to read (-1: read a size line)
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(ConnectionError("closed before the response"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.started.done():
            self.raw += data
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.raw[:end]).lower()
            rest = bytes(self.raw[end + 4 :])
            self.raw.clear()
            if not head.startswith(b"http/1.1 200"):
                self.started.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
                assert self.transport is not None
                self.transport.close()
                return
            self.chunked = b"transfer-encoding: chunked" in head
            self.started.set_result(None)
            data = rest
        if self.chunked:
            self.raw += data
            raw = self.raw
            pos = 0
            while True:
                if self.need < 0:
                    eol = raw.find(b"\r\n", pos)
                    if eol < 0:
                        break
                    size = int(raw[pos:eol].split(b";")[0] or b"0", 16)
                    pos = eol + 2
                    if size == 0:
                        break
                    self.need = size
                if len(raw) - pos < self.need + 2:
                    break
                self.body += raw[pos : pos + self.need]
                pos += self.need + 2
                self.need = -1
            del raw[:pos]
        else:
            self.body += data
        self._events()

    def _events(self) -> None:
        body = self.body
        while True:
            end = body.find(b"\r\n\r\n")
            sep = 4
            if end < 0:
                end = body.find(b"\n\n")
                sep = 2
                if end < 0:
                    return
            event = bytes(body[:end])
            del body[: end + sep]
            for line in event.splitlines():
                if line.startswith(b"data:"):
                    self.on_data(line[5:].lstrip())


async def sse_connect(
    port: int, path: str, on_data: Callable[[bytes], None], *, timeout: float = 30
) -> SSEClient:
    loop = asyncio.get_running_loop()
    transport, proto = await asyncio.wait_for(
        loop.create_connection(lambda: SSEClient(on_data), "127.0.0.1", port), timeout
    )
    transport.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    try:
        await asyncio.wait_for(asyncio.shield(proto.started), timeout)
    except BaseException:
        transport.close()
        raise
    return proto


# --------------------------------------------------------------------------- bare servers


Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


async def _lifespan(
    receive: Receive, send: Send, on_start: Callable[[], Any] | None = None
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_start is not None:
                await on_start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _not_found(send: Send) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _bare_ws(scope: Scope, receive: Receive, send: Send, *, echo: bool) -> None:
    """Pings get pongs (in order with everything else); audio is sent back (``echo``)
    or discarded."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "http":
        await _not_found(send)
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None:
            msg = json.loads(text)
            if msg.get("type") == "ping":
                await send(
                    {
                        "type": "websocket.send",
                        "text": json.dumps({"type": "pong", "ts": msg.get("ts")}),
                    }
                )
        elif echo:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare WebSocket echo server (the ingest benchmark's baseline)."""
    await _bare_ws(scope, receive, send, echo=True)


async def sink_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The echo server without the echo: a floor below any server that reads frames."""
    await _bare_ws(scope, receive, send, echo=False)


class Broadcast:
    """Redis channel ``{prefix}:events:{session}`` -> every open socket of that session."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = f"{prefix}:events:"
        self.ws: dict[str, list[Send]] = {}
        self.sse: dict[str, list[Send]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.reader())  # keep a reference

    async def reader(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.psubscribe(self.prefix + "*")
        skip = len(self.prefix)
        async for msg in pubsub.listen():
            if msg.get("type") != "pmessage":
                continue
            session = msg["channel"][skip:].decode()
            data: bytes = msg["data"]
            ws = {"type": "websocket.send", "text": data.decode()}
            for send in list(self.ws.get(session, ())):
                with contextlib.suppress(Exception):
                    await send(ws)
            sse = {
                "type": "http.response.body",
                "body": b"data: " + data + b"\r\n\r\n",
                "more_body": True,
            }
            for send in list(self.sse.get(session, ())):
                with contextlib.suppress(Exception):
                    await send(sse)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.start)
            return
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        session = query.get("session", "")
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            self.ws.setdefault(session, []).append(send)
            try:
                while (await receive())["type"] != "websocket.disconnect":
                    pass
            finally:
                self.ws[session].remove(send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        self.sse.setdefault(session, []).append(send)
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            self.sse[session].remove(send)


def _serve_bare() -> None:
    import argparse

    import uvicorn

    from mcustt.server import uvicorn_options

    parser = argparse.ArgumentParser(description="bare baseline servers for the benchmarks")
    parser.add_argument("kind", choices=["echo", "sink", "broadcast"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="bench")
    args = parser.parse_args()
    raise_nofile()
    app: Any = {"echo": echo_app, "sink": sink_app}.get(args.kind) or Broadcast(
        args.redis_url, args.prefix
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, **uvicorn_options())
    uvicorn.Server(config).run()


if __name__ == "__main__":
    _serve_bare()
