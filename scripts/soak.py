#!/usr/bin/env python
"""Soak (issue 13, scenario 6): real speech producers and many viewers, reconnecting at
random, for a long time, against ``mcustt serve`` nodes this script starts itself.

    python scripts/soak.py --producers 20 --viewers 500 --minutes 60
    python scripts/soak.py --producers 2 --viewers 12 --minutes 3            # CI size
    python scripts/soak.py --db sqlite --producers 4 --viewers 40 --minutes 5 # one node

What it runs:

* ``--nodes`` nodes (default 2) on a fresh PostgreSQL database and Redis (``--db
  postgres``), or one node on a fresh SQLite file (``--db sqlite``), with the sphinx
  engine;
* one session per producer; each producer streams real speech fixtures at real-time
  pace in 100 ms frames, each fixture followed by digital silence so that speech is
  ``--speech-share`` of the time (default 15 %: 20 streams then keep about 3 speaking at
  once, what a 2-core machine decodes in real time next to 500 viewers; the VAD keeps
  the silence from the engine). Every ``~--producer-reconnect-s`` (exponential) it
  disconnects (a clean close, or 1 time in 4 a TCP abort) and reconnects to a random
  node with a fresh ingest token minted with the session's owner secret;
* ``--viewers`` viewers spread over the sessions, half ``/ws/subscribe`` and half SSE,
  each connected to a random node and reconnecting every ``~--viewer-reconnect-s``
  with its last seq (``lastSeq`` / ``lastEventId``), or at once when the server closes
  it.

Every ``--report-s`` seconds (default 30) it prints RSS, open fds and CPU of every
server process (nodes and their recognizer workers, from ``/proc``), each node's
asyncio task count (``mcustt_tasks``), producer and viewer gauges, and the clients'
connects and finals so far. At the end it stops the producers, lets every viewer catch
up, and checks:

* the stored transcript of every session is seqs 1..N without a gap, and every final a
  producer received is in it with the same text;
* every viewer saw every final of its session exactly once, in order (lost, duplicated,
  out of order are counted);
* RSS growth of each server process from the end of the warm-up to the end (%);
* leaks: tasks and fds of each node (and its workers' fds) once every client is gone,
  against the baseline taken before any client connected. fds are read by kind
  (``/proc/PID/fd`` and ``/proc/PID/net/tcp``): pooled connections to PostgreSQL and
  Redis are reported apart (a pool keeps what it once needed, up to its size) and the
  rest (client sockets, pipes, files, epoll/eventfd) must come back to the baseline.

Each node's sphinx worker builds ``--decoders`` decoders at start
(``MCUSTT_SPHINX_DECODERS``; default ``--producers``: producers reconnect to a random
node, so one node may get them all): the most utterances it can overlap, so that its
memory is fixed from the start and RSS growth measures leaks, not a new peak of
concurrency (a decoder is ~90 MB, and a worker's RSS stays at its peak).

It exits non-zero on any lost, duplicated or out-of-order final, a transcript gap, or
growth or leaks beyond the tolerances (``--max-rss-growth``, ``--task-tolerance``,
``--fd-tolerance``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from benchlib import (
    ADMIN,
    ROOT,
    client_frame,
    cpu_seconds,
    descendants,
    fmt,
    free_port,
    provision,
    raise_nofile,
    rss_bytes,
    spawn_mcustt,
    sse_connect,
    stop_proc,
    table,
    wait_http,
    ws_connect,
)

FIXTURES = ROOT / "tests" / "fixtures"
SPEECH = ("hello_en.wav", "pause_en.wav", "standup_en.wav")
CHUNK_MS = 100
CHUNK = CHUNK_MS * 32  # bytes of PCM16 16 kHz mono
MASK = b"\x11\x22\x33\x44"  # a fixed client mask: audio frames are built once


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def read_pcm(name: str) -> bytes:
    with wave.open(str(FIXTURES / name), "rb") as w:
        return w.readframes(w.getnframes())


def frames_of(pcm: bytes) -> list[bytes]:
    """Pre-masked binary WebSocket frames of ``CHUNK_MS`` each."""
    return [client_frame(2, pcm[i : i + CHUNK], MASK) for i in range(0, len(pcm), CHUNK)]


# --------------------------------------------------------------------------- the nodes


@dataclass
class Node:
    name: str
    port: int
    proc: Any
    log_path: Path

    @property
    def pid(self) -> int:
        return int(self.proc.pid)


def _tcp_peers(pid: int) -> dict[str, int]:
    """Socket inode -> the remote port of every TCP socket in ``pid``'s namespace."""
    peers: dict[str, int] = {}
    for table_name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table_name}") as fh:
                next(fh)
                for line in fh:
                    cols = line.split()
                    peers[cols[9]] = int(cols[2].rsplit(":", 1)[1], 16)
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return peers


def fd_kinds(pid: int, services: dict[int, str]) -> dict[str, int]:
    """``pid``'s open fds by kind: a TCP socket to one of ``services`` (port -> name:
    the database's and Redis's pooled connections), other TCP sockets (clients,
    listeners), unix sockets, pipes, files and anonymous inodes (epoll, eventfd)."""
    kinds: dict[str, int] = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return kinds
    peers = _tcp_peers(pid)
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            port = peers.get(target[8:-1])
            kind = "unix/other socket" if port is None else services.get(port, "tcp")
        elif target.startswith("pipe:"):
            kind = "pipe"
        elif target.startswith("anon_inode:"):
            kind = "anon"
        else:
            kind = "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


async def scrape(node: Node) -> dict[str, float]:
    """The node's gauges and counters (``/metrics``), unlabelled samples by name."""
    import httpx

    out: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(
                f"http://127.0.0.1:{node.port}/metrics",
                headers={"authorization": f"Bearer {ADMIN}"},
            )
    except httpx.HTTPError:
        return out
    for line in r.text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(value) if "{" in name else float(value)
    return out


@dataclass
class ProcSample:
    rss: int
    cpu: float
    #: open fds by kind (:func:`fd_kinds`)
    kinds: dict[str, int]

    @property
    def fds(self) -> int:
        return sum(self.kinds.values())

    @property
    def own_fds(self) -> int:
        """fds that are not pooled connections to the database or Redis: pools keep
        connections up to their size once they were needed (reported apart)."""
        return sum(n for k, n in self.kinds.items() if k not in POOLED)


#: the fd kinds of pooled service connections (see ``services`` in :func:`sample_procs`)
POOLED = ("postgres", "redis")


def sample_procs(nodes: list[Node], services: dict[int, str]) -> dict[str, ProcSample]:
    """RSS, CPU seconds, fds by kind of each node and each of its descendants (workers)."""
    out: dict[str, ProcSample] = {}
    for node in nodes:
        pids = [node.pid, *sorted(descendants(node.pid))]
        for i, pid in enumerate(pids):
            name = node.name if i == 0 else f"{node.name}/worker{i - 1}"
            out[name] = ProcSample(rss_bytes(pid), cpu_seconds(pid), fd_kinds(pid, services))
    return out


# --------------------------------------------------------------------------- the clients


@dataclass
class Stats:
    producer_connects: int = 0
    producer_refused: dict[str, int] = field(default_factory=dict)
    producer_errors: dict[str, int] = field(default_factory=dict)
    producer_aborts: int = 0
    producers_live: int = 0
    viewer_connects: int = 0
    viewer_refused: dict[str, int] = field(default_factory=dict)
    viewer_server_closes: int = 0
    viewers_live: int = 0
    finals_seen: int = 0

    def refuse(self, where: dict[str, int], exc: BaseException) -> None:
        text = str(exc)
        key = (
            text.split()[1]
            if text.startswith("HTTP/") and len(text.split()) > 1
            else type(exc).__name__
        )
        where[key] = where.get(key, 0) + 1


@dataclass
class SessionRun:
    id: str
    owner_secret: str
    read_token: str
    ingest_token: str | None
    #: finals the producer got on its own socket: seq -> text
    produced: dict[int, str] = field(default_factory=dict)


class Producer:
    def __init__(
        self,
        args: argparse.Namespace,
        session: SessionRun,
        nodes: list[Node],
        stats: Stats,
        speech: list[list[bytes]],
        silence: bytes,
        rng: random.Random,
    ) -> None:
        self.args = args
        self.session = session
        self.nodes = nodes
        self.stats = stats
        self.speech = speech
        self.silence = silence
        self.rng = rng
        self._audio = self._frames()

    def _frames(self) -> Any:
        """Speech fixtures, each followed by silence: speech is ``--speech-share`` of it."""
        share = self.args.speech_share
        # desynchronize the producers: start somewhere in a silence
        for _ in range(self.rng.randrange(0, int(20_000 / CHUNK_MS))):
            yield self.silence
        while True:
            frames = self.rng.choice(self.speech)
            yield from frames
            gap = len(frames) * (1 / share - 1) * self.rng.uniform(0.5, 1.5)
            for _ in range(int(gap)):
                yield self.silence

    async def _token(self, base: str) -> str:
        import httpx

        if self.session.ingest_token:
            token, self.session.ingest_token = self.session.ingest_token, None
            return token
        async with httpx.AsyncClient(timeout=30) as c:
            r = await c.post(
                f"{base}/api/sessions/{self.session.id}/ingest-token",
                json={"ownerSecret": self.session.owner_secret},
            )
        r.raise_for_status()
        return str(r.json()["ingestToken"])

    def _on_text(self, raw: bytes) -> None:
        with contextlib.suppress(ValueError):
            msg = json.loads(raw)
            if msg.get("type") == "transcript" and msg.get("isFinal") and not msg.get("revised"):
                self.session.produced[int(msg["seq"])] = str(msg["text"])
            elif msg.get("type") == "error":
                code = str(msg.get("code"))
                self.stats.producer_errors[code] = self.stats.producer_errors.get(code, 0) + 1

    async def run(self, stop: asyncio.Event) -> None:
        token: str | None = None
        while not stop.is_set():
            node = self.rng.choice(self.nodes)
            base = f"http://127.0.0.1:{node.port}"
            try:
                if token is None:
                    token = await self._token(base)
                ws = await ws_connect(node.port, f"/ws/stt?token={token}", self._on_text, MASK)
            except Exception as exc:
                self.stats.refuse(self.stats.producer_refused, exc)
                if " 401 " in f" {exc} " or "403" in str(exc):
                    token = None  # burned or expired: mint a fresh one
                # 409: the previous connection's claim is still being released; 503:
                # the node is draining or full (Retry-After); either way, soon again
                await asyncio.sleep(
                    self.rng.uniform(0.5, 2.0) * (3 if " 503 " in f" {exc} " else 1)
                )
                continue
            token = None  # burned by the connect
            self.stats.producer_connects += 1
            self.stats.producers_live += 1
            try:
                await self._stream(ws, stop)
            finally:
                self.stats.producers_live -= 1

    async def _stream(self, ws: benchlib.WSClient, stop: asyncio.Event) -> None:
        hold = self.rng.expovariate(1 / self.args.producer_reconnect_s)
        until = time.monotonic() + max(5.0, hold)
        start = time.monotonic()
        sent = 0
        while not stop.is_set() and not ws.closed.done() and time.monotonic() < until:
            ws.write(next(self._audio))
            sent += 1
            delay = start + sent * CHUNK_MS / 1000 - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
        if ws.closed.done():
            return  # the server closed it (its reason is counted in producer_errors)
        if not stop.is_set() and self.rng.random() < 0.25:
            # a crash of the producer: no close frame, the TCP connection just goes
            self.stats.producer_aborts += 1
            assert ws.transport is not None
            ws.transport.abort()
            return
        await ws.close(1000, timeout=30)  # the server finalizes the utterance in flight


class Viewer:
    def __init__(
        self,
        args: argparse.Namespace,
        session: SessionRun,
        nodes: list[Node],
        stats: Stats,
        kind: str,
        rng: random.Random,
    ) -> None:
        self.args = args
        self.session = session
        self.nodes = nodes
        self.stats = stats
        self.kind = kind
        self.rng = rng
        #: every final seq received, in arrival order (replays included)
        self.seqs: list[int] = []
        self.texts: dict[int, str] = {}
        self.last = 0
        self.settled = asyncio.Event()

    def _final(self, msg: dict[str, Any]) -> None:
        if msg.get("isFinal") and not msg.get("revised") and isinstance(msg.get("seq"), int):
            seq = msg["seq"]
            self.seqs.append(seq)
            self.texts.setdefault(seq, str(msg.get("text")))
            self.last = max(self.last, seq)
            self.stats.finals_seen += 1

    def _on_ws(self, raw: bytes) -> None:
        with contextlib.suppress(ValueError):
            msg = json.loads(raw)
            if msg.get("type") == "transcript":
                self._final(msg)

    def _on_sse(self, raw: bytes) -> None:
        with contextlib.suppress(ValueError):
            msg = json.loads(raw)
            if isinstance(msg, dict) and "isFinal" in msg:
                self._final(msg)

    async def run(self, stop: asyncio.Event, calm: asyncio.Event) -> None:
        """Until ``stop``; after ``calm`` no more random disconnects (the final check)."""
        while not stop.is_set():
            node = self.rng.choice(self.nodes)
            token = self.session.read_token
            try:
                if self.kind == "ws":
                    path = f"/ws/subscribe?token={token}&lastSeq={self.last}"
                    conn: Any = await ws_connect(node.port, path, self._on_ws, MASK)
                else:
                    path = f"/api/sessions/{self.session.id}/stream?token={token}&lastEventId={self.last}"
                    conn = await sse_connect(node.port, path, self._on_sse)
            except Exception as exc:
                self.stats.refuse(self.stats.viewer_refused, exc)
                await asyncio.sleep(self.rng.uniform(0.5, 2.0))
                continue
            self.stats.viewer_connects += 1
            self.stats.viewers_live += 1
            try:
                hold = self.rng.expovariate(1 / self.args.viewer_reconnect_s)
                waits = {
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(asyncio.shield(conn.closed)),
                }
                if not calm.is_set():
                    waits.add(asyncio.ensure_future(asyncio.sleep(hold)))
                _done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for t in pending:
                    t.cancel()
                if conn.closed.done():
                    self.stats.viewer_server_closes += 1
                elif self.kind == "ws":
                    if self.rng.random() < 0.25 and not stop.is_set():
                        conn.transport.abort()
                    else:
                        await conn.close(1000)
                else:
                    conn.transport.close()
            finally:
                self.stats.viewers_live -= 1
            await asyncio.sleep(self.rng.uniform(0.0, 1.0))


# --------------------------------------------------------------------------- reporting


def report(
    t0: float,
    nodes: list[Node],
    procs: dict[str, ProcSample],
    prev: dict[str, ProcSample],
    dt: float,
    scraped: dict[str, dict[str, float]],
    stats: Stats,
) -> None:
    rows = []
    for name, s in procs.items():
        p = prev.get(name)
        cpu = 100 * (s.cpu - p.cpu) / dt if p and dt > 0 else float("nan")
        m = scraped.get(name, {})
        rows.append(
            [
                name,
                fmt(s.rss / 2**20),
                f"{s.fds} ({s.fds - s.own_fds} pooled)",
                fmt(cpu, 0),
                fmt(m.get("mcustt_tasks", float("nan")), 0) if name in scraped else "",
                fmt(m.get("mcustt_producers", float("nan")), 0) if name in scraped else "",
                fmt(m.get("mcustt_viewers", float("nan")), 0) if name in scraped else "",
            ]
        )
    print(
        table(
            ["process", "RSS MB", "fds", "CPU %", "tasks", "producers", "viewers"],
            rows,
            title=f"-- t={time.monotonic() - t0:,.0f}s  load {benchlib.loadavg():.2f}",
        )
    )
    print(
        f"   clients: producers live {stats.producers_live} (connects {stats.producer_connects}, "
        f"aborts {stats.producer_aborts}, refused {stats.producer_refused}, errors "
        f"{stats.producer_errors}); viewers live {stats.viewers_live} (connects "
        f"{stats.viewer_connects}, closed by server {stats.viewer_server_closes}, refused "
        f"{stats.viewer_refused}); finals received by viewers {stats.finals_seen}",
        flush=True,
    )


async def transcript(node: Node, key: str, session_id: str) -> list[dict[str, Any]]:
    import httpx

    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.get(
            f"http://127.0.0.1:{node.port}/api/sessions/{session_id}/transcript",
            params={"format": "json"},
            headers={"x-tenant-key": key},
        )
    r.raise_for_status()
    lines: list[dict[str, Any]] = r.json()["lines"]
    return lines


async def prime(node: Node, token: str, frames: list[bytes]) -> None:
    """Stream ``frames`` as fast as the node takes them, then wait until its finals
    stop coming (5 s quiet, 180 s at most) and leave."""
    heard = [time.monotonic()]

    def on_text(raw: bytes) -> None:
        heard[0] = time.monotonic()

    ws = await ws_connect(node.port, f"/ws/stt?token={token}", on_text, MASK)
    for frame in frames:
        ws.write(frame)
    heard[0] = time.monotonic()
    deadline = time.monotonic() + 180
    while time.monotonic() < min(deadline, heard[0] + 5) and not ws.closed.done():
        await asyncio.sleep(0.5)
    await ws.close(1000, timeout=60)


async def settle_idle(nodes: list[Node], limit_s: float = 60) -> dict[str, dict[str, float]]:
    """Wait until no node counts a producer or viewer, then a little longer (pipelines
    finalize, sockets close); returns the last scrape."""
    deadline = time.monotonic() + limit_s
    scraped: dict[str, dict[str, float]] = {}
    while time.monotonic() < deadline:
        scraped = {n.name: await scrape(n) for n in nodes}
        if all(
            s.get("mcustt_producers", 0) == 0 and s.get("mcustt_viewers", 0) == 0
            for s in scraped.values()
        ):
            break
        await asyncio.sleep(1)
    await asyncio.sleep(5)
    return {n.name: await scrape(n) for n in nodes}


# --------------------------------------------------------------------------- main


def _quiet_failed_connects(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A connect that timed out leaves benchlib's handshake future failing unobserved:
    that is counted (``refused``), not worth a traceback each."""
    if isinstance(context.get("exception"), ConnectionError):
        return
    loop.default_exception_handler(context)


async def run(args: argparse.Namespace, tmp: Path) -> int:
    rng = random.Random(args.seed)
    asyncio.get_running_loop().set_exception_handler(_quiet_failed_connects)
    raise_nofile()
    env: dict[str, str] = {
        "MCUSTT_RECOGNIZER": "sphinx",
        "MCUSTT_RECOGNIZER_WORKERS": str(args.workers),
        "MCUSTT_SPHINX_DECODERS": str(args.decoders or args.producers),
        "MCUSTT_LOG_LEVEL": "warning",
    }
    if not args.admission:
        env["MCUSTT_MAX_LOOP_LAG_MS"] = "0"
        env["MCUSTT_MAX_LOOP_BUSY"] = "0"
        env["MCUSTT_MAX_RECOGNIZER_LOAD"] = "0"
    pg_name = ""
    if args.db == "postgres":
        pg_name = "soak_" + uuid.uuid4().hex[:10]
        env["MCUSTT_DATABASE_URL"] = benchlib.create_pg_database(args.pg_url, pg_name)
        env["MCUSTT_REDIS_URL"] = args.redis_url
        env["MCUSTT_REDIS_PREFIX"] = pg_name
        n_nodes = args.nodes
    else:
        env["MCUSTT_DATABASE_URL"] = benchlib.migrate_sqlite(tmp / "soak.db")
        n_nodes = 1  # SQLite is one node's database
    nodes: list[Node] = []
    try:
        for i in range(n_nodes):
            port = free_port()
            log_path = tmp / f"node{i}.log"
            nodes.append(Node(f"node{i}", port, spawn_mcustt(env, port, log_path), log_path))
        for node in nodes:
            await wait_http(node.port, node.proc, node.log_path)
        log(
            f"{n_nodes} node(s) on {args.db}: "
            + ", ".join(f"{n.name} :{n.port} pid {n.pid}" for n in nodes)
            + f"; logs in {tmp}"
        )
        return await soak(args, rng, nodes)
    finally:
        for node in nodes:
            stop_proc(node.proc)
        if pg_name:
            benchlib.drop_pg_database(args.pg_url, pg_name)


def service_ports(args: argparse.Namespace) -> dict[int, str]:
    """The database's and Redis's ports: connections to them are the nodes' pools."""
    from urllib.parse import urlsplit

    if args.db != "postgres":
        return {}
    return {
        urlsplit(args.pg_url).port or 5432: "postgres",
        urlsplit(args.redis_url).port or 6379: "redis",
    }


async def soak(args: argparse.Namespace, rng: random.Random, nodes: list[Node]) -> int:
    services = service_ports(args)
    speech = [frames_of(read_pcm(name)) for name in SPEECH]
    silence = client_frame(2, b"\x00" * CHUNK, MASK)
    key, docs = await provision(
        f"http://127.0.0.1:{nodes[0].port}",
        args.producers + len(nodes),
        name=f"soak {uuid.uuid4().hex[:6]}",
    )
    # Every fixture decoded on each node first: its recognizer worker loads its model
    # and grows to its working size (≈240 MB) before the baseline, not in the middle
    # of the RSS figures.
    primers, docs = docs[: len(nodes)], docs[len(nodes) :]
    await asyncio.gather(
        *(
            prime(n, d["ingestToken"], [f for fx in speech for f in (*fx, *[silence] * 15)])
            for n, d in zip(nodes, primers, strict=True)
        )
    )
    sessions = [
        SessionRun(d["sessionId"], d["ownerSecret"], d["subscribeToken"], d["ingestToken"])
        for d in docs
    ]
    # Before any client: the baseline of tasks and fds (leaks are counted against it).
    base_scrape = {n.name: await scrape(n) for n in nodes}
    base = sample_procs(nodes, services)
    stats = Stats()
    stop_producers, stop_viewers, calm = asyncio.Event(), asyncio.Event(), asyncio.Event()
    producers = [
        Producer(args, s, nodes, stats, speech, silence, random.Random(rng.random()))
        for s in sessions
    ]
    viewers = [
        Viewer(
            args,
            sessions[i % len(sessions)],
            nodes,
            stats,
            "ws" if i % 2 == 0 else "sse",
            random.Random(rng.random()),
        )
        for i in range(args.viewers)
    ]
    tasks: list[asyncio.Task[None]] = []
    ramp_s = min(args.ramp_s, 0.06 * len(viewers))
    log(f"{len(viewers)} viewers joining over {ramp_s:.0f} s, then {len(producers)} producers")
    for v in viewers:  # ramped: 500 upgrades at once are not what is being tested
        tasks.append(asyncio.create_task(v.run(stop_viewers, calm)))
        await asyncio.sleep(ramp_s / max(1, len(viewers)))
    for p in producers:
        tasks.append(asyncio.create_task(p.run(stop_producers)))
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    warmup_s = (
        args.warmup_minutes * 60
        if args.warmup_minutes is not None
        else min(600.0, max(60.0, 0.2 * args.minutes * 60))
    )
    warm: dict[str, ProcSample] | None = None
    last: dict[str, ProcSample] = base
    last_t = time.monotonic()
    try:
        while time.monotonic() < end:
            await asyncio.sleep(max(0.0, min(args.report_s, end - time.monotonic())))
            now = time.monotonic()
            procs = sample_procs(nodes, services)
            scraped = {n.name: await scrape(n) for n in nodes}
            report(t0, nodes, procs, last, now - last_t, scraped, stats)
            if warm is None and now - t0 >= warmup_s:
                warm = procs
                log(f"warm-up over ({warmup_s:.0f} s): RSS growth is measured from here")
            last, last_t = procs, now
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        final_procs = sample_procs(nodes, services)
        if warm is None:
            warm = base
        # The end: producers leave (their utterances in flight are finalized), viewers
        # stay connected without random disconnects until they have every final.
        calm.set()
        stop_producers.set()
        await asyncio.gather(*tasks[len(viewers) :], return_exceptions=True)
        log("producers stopped; waiting for viewers to catch up")
        await asyncio.sleep(3)
        lines: dict[str, list[dict[str, Any]]] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            lines = {s.id: await transcript(nodes[0], key, s.id) for s in sessions}
            if all(
                v.last >= (lines[v.session.id][-1]["seq"] if lines[v.session.id] else 0)
                for v in viewers
            ):
                break
            await asyncio.sleep(1)
        await asyncio.sleep(2)  # a duplicate arriving late would show now
        lines = {s.id: await transcript(nodes[0], key, s.id) for s in sessions}
        stop_viewers.set()
        await asyncio.gather(*tasks[: len(viewers)], return_exceptions=True)
    finally:
        stop_producers.set()
        stop_viewers.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    log("every client disconnected; waiting for the nodes to be idle")
    idle_scrape = await settle_idle(nodes)
    idle = sample_procs(nodes, services)
    return verdict(
        args,
        sessions,
        viewers,
        lines,
        base,
        base_scrape,
        warm,
        final_procs,
        idle,
        idle_scrape,
        stats,
    )


def verdict(
    args: argparse.Namespace,
    sessions: list[SessionRun],
    viewers: list[Viewer],
    lines: dict[str, list[dict[str, Any]]],
    base: dict[str, ProcSample],
    base_scrape: dict[str, dict[str, float]],
    warm: dict[str, ProcSample],
    final: dict[str, ProcSample],
    idle: dict[str, ProcSample],
    idle_scrape: dict[str, dict[str, float]],
    stats: Stats,
) -> int:
    failures: list[str] = []
    rows = []
    total_lost = total_dup = total_disorder = 0
    for s in sessions:
        stored = lines[s.id]
        seqs = [line["seq"] for line in stored]
        texts = {line["seq"]: line["text"] for line in stored}
        n = len(seqs)
        if seqs != list(range(1, n + 1)):
            failures.append(f"session {s.id}: transcript seqs are not 1..{n}: {seqs[:20]}…")
        missing = [q for q in s.produced if texts.get(q) != s.produced[q]]
        if missing:
            failures.append(
                f"session {s.id}: finals the producer got are not stored as sent: {missing[:10]}"
            )
        mine = [v for v in viewers if v.session is s]
        ok = 0
        for v in mine:
            seen = set(v.seqs)
            lost = len(set(seqs) - seen)
            dup = len(v.seqs) - len(seen)
            disorder = sum(1 for a, b in zip(v.seqs, v.seqs[1:], strict=False) if b <= a)
            wrong = sum(1 for q, t in v.texts.items() if texts.get(q) != t)
            total_lost += lost
            total_dup += dup
            total_disorder += disorder
            if lost or dup or disorder or wrong:
                failures.append(
                    f"session {s.id} {v.kind} viewer: lost {lost}, duplicated {dup}, "
                    f"out of order {disorder}, text differs {wrong}"
                )
            else:
                ok += 1
        rows.append([s.id, str(n), str(len(s.produced)), f"{ok}/{len(mine)}"])
    print(
        table(
            ["session", "stored finals", "producer got", "viewers exact"],
            rows,
            title="-- finals per session (stored transcript vs producer vs viewers)",
        )
    )

    # RSS growth after warm-up, per process; leaks once idle, against the baseline.
    growth_rows = []
    worst_growth = 0.0
    for name, s in final.items():
        w = warm.get(name)
        growth = 100 * (s.rss - w.rss) / w.rss if w and w.rss else float("nan")
        if growth == growth and (args.rss_check == "all" or "/" not in name):
            worst_growth = max(worst_growth, growth)
        b = base.get(name)
        i = idle.get(name)
        fd_leak = (i.own_fds - b.own_fds) if b and i else 0
        pooled = (
            ", ".join(f"{k} {b.kinds.get(k, 0)}→{i.kinds.get(k, 0)}" for k in POOLED)
            if b and i
            else "-"
        )
        task_leak = float("nan")
        if name in idle_scrape and name in base_scrape:
            task_leak = idle_scrape[name].get("mcustt_tasks", 0) - base_scrape[name].get(
                "mcustt_tasks", 0
            )
        growth_rows.append(
            [
                name,
                fmt(w.rss / 2**20 if w else float("nan")),
                fmt(s.rss / 2**20),
                fmt(growth, 1),
                str(b.own_fds if b else "-"),
                str(i.own_fds if i else "-"),
                str(fd_leak),
                pooled,
                fmt(base_scrape.get(name, {}).get("mcustt_tasks", float("nan")), 0),
                fmt(idle_scrape.get(name, {}).get("mcustt_tasks", float("nan")), 0),
            ]
        )
        if b and i and fd_leak > args.fd_tolerance:
            failures.append(
                f"{name}: {fd_leak} fds (not pooled connections) more once idle than at the "
                f"start: {b.kinds if b else {}} → {i.kinds if i else {}}"
            )
        if task_leak == task_leak and task_leak > args.task_tolerance:
            failures.append(
                f"{name}: {task_leak:.0f} asyncio tasks more once idle than at the start"
            )
    print(
        table(
            [
                "process",
                "RSS warm MB",
                "RSS end MB",
                "growth %",
                "fds base",
                "fds idle",
                "fd leak",
                "pooled conns base→idle",
                "tasks base",
                "tasks idle",
            ],
            growth_rows,
            title="-- resources (growth: end of warm-up → end; leaks: idle after vs before)",
        )
    )
    if worst_growth > args.max_rss_growth:
        failures.append(
            f"RSS grew {worst_growth:.1f} % after warm-up (limit {args.max_rss_growth} %)"
        )
    print(
        f"SUMMARY finals stored {sum(len(v) for v in lines.values())}, viewers {len(viewers)}, "
        f"finals lost {total_lost}, duplicated {total_dup}, out of order {total_disorder}, "
        f"worst RSS growth {worst_growth:.1f} %, producer connects {stats.producer_connects}, "
        f"viewer connects {stats.viewer_connects}",
        flush=True,
    )
    if not any(lines.values()):
        failures.append("no final was made at all (is sphinx working?)")
    for f in failures[:50]:
        print("FAIL", f)
    print("RESULT", "FAIL" if failures else "OK", flush=True)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--viewers", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "MCUSTT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("MCUSTT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--workers", type=int, default=1, help="sphinx worker processes per node")
    parser.add_argument(
        "--speech-share",
        type=float,
        default=0.15,
        help="share of each producer's time that is speech (the rest is silence)",
    )
    parser.add_argument(
        "--producer-reconnect-s",
        type=float,
        default=60.0,
        help="mean time a producer stays connected",
    )
    parser.add_argument(
        "--viewer-reconnect-s", type=float, default=45.0, help="mean time a viewer stays connected"
    )
    parser.add_argument("--report-s", type=float, default=30.0)
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        default=None,
        help="RSS growth is measured after this (default 20 %% of the run, 1..10 min)",
    )
    parser.add_argument("--max-rss-growth", type=float, default=5.0, help="%% after warm-up")
    parser.add_argument(
        "--rss-check",
        choices=("all", "nodes"),
        default="all",
        help="whose RSS growth is checked: every process, or the nodes only (a recognizer "
        "worker grows once to its working size, which a short run may see after warm-up)",
    )
    parser.add_argument("--task-tolerance", type=int, default=2)
    parser.add_argument(
        "--fd-tolerance",
        type=int,
        default=5,
        help="fds a process may hold more once idle, pooled database/Redis connections apart",
    )
    parser.add_argument(
        "--decoders",
        type=int,
        default=0,
        help="sphinx decoders each worker builds at start (MCUSTT_SPHINX_DECODERS; default: "
        "--producers, as every producer may reconnect to the same node)",
    )
    parser.add_argument("--ramp-s", type=float, default=30.0, help="viewers join over this long")
    parser.add_argument(
        "--admission",
        action="store_true",
        help="keep the nodes' load-based admission (MCUSTT_MAX_LOOP_LAG_MS, "
        "MCUSTT_MAX_RECOGNIZER_LOAD); by default it is off, so that a busy machine's loop "
        "lag or recognizer backlog does not keep the producers out of the soak",
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if not 0 < args.speech_share <= 1:
        parser.error("--speech-share is in (0, 1]")
    if args.producers < 1 or args.viewers < 0:
        parser.error("at least one producer")
    with tempfile.TemporaryDirectory(prefix="mcustt-soak-") as tmp:
        return asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
