"""Benchmark caption fan-out (``/ws/subscribe`` + SSE) on two nodes over Redis.

Usage (from the repo root)::

    .venv/bin/python scripts/bench_fanout.py                    # 5,000 viewers, 10 sessions
    .venv/bin/python scripts/bench_fanout.py --viewers 2000 --producers 20 --seconds 20

What runs, twice in one invocation (mcustt first, then the baseline):

* two server nodes (``python -m mcustt serve``, recognizer null, one shared SQLite file
  or ``--db postgres``, ``MCUSTT_REDIS_URL`` with a unique prefix); the baseline is two
  *bare broadcast* nodes: an ASGI app under the same uvicorn options that subscribes to
  the same Redis channels and writes each message to every open socket of its session
  (a WebSocket text frame, or an SSE ``data:`` event), nothing else;
* ``--viewers`` V viewers from ``--client-procs`` client processes (raw asyncio clients):
  half WebSocket ``/ws/subscribe``, half SSE ``/api/sessions/:id/stream``, spread evenly
  over both nodes and over the ``--producers`` P sessions;
* the event source: one publisher process that, for each of the P sessions, publishes
  ``--rate`` events a second (phase-staggered; interim then final of the same seq, the
  way recognizers do) **straight into Redis** on ``{prefix}:events:{sessionId}``, in the
  exact wire format (``mcustt.events.dumps(mcustt.events.transcript(...))``). The
  pipeline publishes through the same hub call, so this is what node A's producers would
  send, at a rate we control exactly, and the same stream feeds the baseline. The publish
  time is in the event: ``ts`` (ms, as on the wire) and, to the microsecond, in the
  caption text ``"bench <unix seconds>"``.

Figures (over the steady window after ``--warmup``; all on one host clock):

* publish -> receive latency p50 / p99 / max over every delivered message;
* server CPU (utime+stime of both nodes from ``/proc``) per 1,000 delivered messages;
* memory per viewer: both nodes' RSS with the viewers connected minus before, / V;
* viewers held (connected and still open at the end) and messages lost.

Targets: 5,000 viewers held; memory, CPU per message and p99 each within 1.5x of the
bare broadcast. The script also checks that an event is serialized once per node, not
once per viewer, by counting ``json.dumps``/``json.loads`` calls in an in-process hub.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import uuid
from array import array
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as MPEvent
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

TEXT_MARK = b'"text":"bench '


# --------------------------------------------------------------------------- publisher


def publisher_main(
    redis_url: str, channels: list[str], rate: float, go: MPEvent, stop: MPEvent, result_q: Any
) -> None:
    """Publish ``rate`` events a second on each channel until ``stop``; report times."""
    import redis

    from mcustt import events

    client = redis.Redis.from_url(redis_url)
    go.wait(120)
    period = 1.0 / rate
    n = len(channels)
    start = time.monotonic() + 0.1
    published: list[float] = []
    seqs = [0] * n
    finals = [False] * n
    k = 0
    while not stop.is_set():
        i = k % n
        due = start + (k // n) * period + i * period / n
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.time()
        if not finals[i]:
            seqs[i] += 1
        msg = events.dumps(
            events.transcript(
                seq=seqs[i],
                text=f"bench {now:.6f}",
                is_final=finals[i],
                lang="en-US",
                ts=int(now * 1000),
            )
        )
        client.publish(channels[i], msg)
        published.append(now)
        finals[i] = not finals[i]
        k += 1
    result_q.put(published)


# --------------------------------------------------------------------------- viewer clients


@dataclass
class ViewerSpec:
    kind: str  # "ws" | "sse"
    port: int
    path: str


class Tally:
    """Per client process: (publish time, latency) of every message received."""

    def __init__(self) -> None:
        self.pub = array("d")
        self.lat = array("d")

    def on_message(self, payload: bytes) -> None:
        now = time.time()
        i = payload.find(TEXT_MARK)
        if i < 0:
            return  # "ready", pings: not a caption
        j = payload.find(b'"', i + len(TEXT_MARK))
        pub = float(payload[i + len(TEXT_MARK) : j])
        self.pub.append(pub)
        self.lat.append((now - pub) * 1000)


def viewer_main(
    index: int, specs: list[ViewerSpec], ready_q: Any, stop: MPEvent, result_q: Any
) -> None:
    bl.raise_nofile()
    import uvloop

    try:
        result = uvloop.run(_viewers(index, specs, ready_q, stop))
    except BaseException as exc:
        result = {"index": index, "fatal": repr(exc)}
    result_q.put(result)


async def _viewers(
    index: int, specs: list[ViewerSpec], ready_q: Any, stop: MPEvent
) -> dict[str, Any]:
    tally = Tally()
    key = os.urandom(4)
    sem = asyncio.Semaphore(32)
    conns: list[bl.WSClient | bl.SSEClient] = []

    async def connect(spec: ViewerSpec) -> None:
        async with sem:
            if spec.kind == "ws":
                conns.append(await bl.ws_connect(spec.port, spec.path, tally.on_message, key))
            else:
                conns.append(await bl.sse_connect(spec.port, spec.path, tally.on_message))

    outcomes = await asyncio.gather(*(connect(s) for s in specs), return_exceptions=True)
    failures = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    ready_q.put((index, len(conns), failures[:3]))
    while not stop.is_set():
        await asyncio.sleep(0.1)
    held = sum(1 for c in conns if not c.closed.done())
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.2)
    return {
        "index": index,
        "connected": len(conns),
        "held": held,
        "failures": failures,
        "pub": tally.pub,
        "lat": tally.lat,
    }


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    server: str
    viewers: int
    connected: int = 0
    held: int = 0
    delivered: int = 0
    expected: int = 0
    rate: float = math.nan
    p50: float = math.nan
    p99: float = math.nan
    pmax: float = math.nan
    cpu_ms_per_1000: float = math.nan
    cpu_pct: tuple[float, float] = (math.nan, math.nan)
    usr_sys: tuple[float, float] = (math.nan, math.nan)  # us of user / kernel CPU a message
    faults: float = math.nan  # minor page faults of the nodes a message
    syscalls: tuple[float, float] = (math.nan, math.nan)  # read-/write-like syscalls a message
    rss_kb_per_viewer: float = math.nan
    client_cpu_pct: float = math.nan
    load: float = math.nan
    steal: float = math.nan
    errors: list[str] = field(default_factory=list)


async def run_once(args: argparse.Namespace, server: str, tmp: Path, database_url: str) -> Run:
    ctx = mp.get_context("spawn")
    res = Run(server, args.viewers)
    prefix = "benchf" + uuid.uuid4().hex[:8]
    ports = [bl.free_port(), bl.free_port()]
    procs = []
    for i, port in enumerate(ports):
        log_path = tmp / f"{server}-{'AB'[i]}-{port}.log"
        if server == "mcustt":
            env = {
                "MCUSTT_DATABASE_URL": database_url,
                "MCUSTT_REDIS_URL": args.redis_url,
                "MCUSTT_REDIS_PREFIX": prefix,
                "MCUSTT_RECOGNIZER": "null",
                "MCUSTT_RECOGNIZER_WORKERS": "1",
                **dict(kv.split("=", 1) for kv in args.server_env),
            }
            procs.append((bl.spawn_mcustt(env, port, log_path), log_path))
        else:
            procs.append(
                (
                    bl.spawn_bare(
                        "broadcast",
                        port,
                        log_path,
                        "--redis-url",
                        args.redis_url,
                        "--prefix",
                        prefix,
                    ),
                    log_path,
                )
            )
    clients: list[Any] = []
    publisher = None
    try:
        for (proc, log_path), port in zip(procs, ports, strict=True):
            await bl.wait_http(port, proc, log_path)
        p = args.producers
        if server == "mcustt":
            _, sessions = await bl.provision(f"http://127.0.0.1:{ports[0]}", p, name="fanout")
            ids = [s["sessionId"] for s in sessions]
        else:
            sessions = [{"sessionId": f"s{i}"} for i in range(p)]
            ids = [s["sessionId"] for s in sessions]
        specs: list[ViewerSpec] = []
        for i in range(args.viewers):
            kind = "ws" if i % 2 == 0 else "sse"
            port = ports[(i // 2) % 2]
            s = sessions[(i // 4) % p]
            if server == "mcustt":
                path = (
                    f"/ws/subscribe?token={s['subscribeToken']}"
                    if kind == "ws"
                    else f"/api/sessions/{s['sessionId']}/stream?t={s['embedToken']}"
                )
            else:
                path = f"/{kind}?session={s['sessionId']}"
            specs.append(ViewerSpec(kind, port, path))
        await asyncio.sleep(1.0)
        pids = [proc.pid for proc, _ in procs]
        rss0 = sum(bl.rss_bytes(pid) for pid in pids)

        ready_q, result_q, pub_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
        stop, go, pub_stop = ctx.Event(), ctx.Event(), ctx.Event()
        k = max(1, min(args.client_procs, args.viewers))
        for c in range(k):
            proc = ctx.Process(
                target=viewer_main, args=(c, specs[c::k], ready_q, stop, result_q), daemon=True
            )
            proc.start()
            clients.append(proc)
        started = time.monotonic()
        for _ in range(k):
            _, ok, errs = await asyncio.to_thread(ready_q.get, True, 120 + args.viewers * 0.05)
            res.connected += ok
            res.errors += errs
        connect_s = time.monotonic() - started
        print(f"  {server}: {res.connected} viewers connected in {connect_s:.1f} s", flush=True)
        channels = [f"{prefix}:events:{sid}" for sid in ids]
        publisher = ctx.Process(
            target=publisher_main,
            args=(args.redis_url, channels, args.rate, go, pub_stop, pub_q),
            daemon=True,
        )
        publisher.start()
        # Each viewer's set-up (token, replay check, SSE "ready") may still be running
        # after its upgrade or headers: the window starts once the nodes are quiet.
        settled = await bl.settle(pids)
        print(f"  {server}: nodes quiet after {settled:.1f} s more", flush=True)
        go.set()
        await asyncio.sleep(args.warmup)
        client_pids = [c.pid for c in clients if c.pid]
        t0 = time.time()
        host0 = bl.host_cpu()
        cpu0 = [bl.cpu_seconds(pid) for pid in pids]
        split0 = [bl.cpu_split(pid) for pid in pids]
        io0 = [bl.syscalls(pid) for pid in pids]
        ccpu0 = sum(bl.cpu_seconds(c) for c in client_pids)
        spy = []
        if args.py_spy and server == "mcustt":
            for i, pid in enumerate(pids):
                spy.append(await bl.py_spy(pid, args.seconds, f"{args.py_spy}-{'AB'[i]}.txt"))
        await asyncio.sleep(args.seconds)
        t1 = time.time()
        res.steal = bl.steal_pct(host0, bl.host_cpu())
        cpu1 = [bl.cpu_seconds(pid) for pid in pids]
        split1 = [bl.cpu_split(pid) for pid in pids]
        io1 = [bl.syscalls(pid) for pid in pids]
        ccpu1 = sum(bl.cpu_seconds(c) for c in client_pids)
        rss1 = sum(bl.rss_bytes(pid) for pid in pids)
        res.load = bl.loadavg()
        pub_stop.set()
        published: list[float] = await asyncio.to_thread(pub_q.get, True, 30)
        await asyncio.sleep(2.0)  # in-flight deliveries
        stop.set()
        results = [await asyncio.to_thread(result_q.get, True, 60) for _ in range(k)]
        for s in spy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(s.wait(), 10)
    finally:
        for c in clients:
            c.join(10)
            if c.is_alive():
                c.kill()
        if publisher is not None:
            publisher.join(5)
            if publisher.is_alive():
                publisher.kill()
        for proc, _ in procs:
            bl.stop_proc(proc)

    lats: list[float] = []
    for r in results:
        if "fatal" in r:
            res.errors.append(f"client {r['index']}: {r['fatal']}")
            continue
        res.held += r["held"]
        res.errors += r["failures"]
        for pub, lat in zip(r["pub"], r["lat"], strict=True):
            if t0 <= pub <= t1:
                lats.append(lat)
    span = t1 - t0
    res.delivered = len(lats)
    in_window = sum(1 for t in published if t0 <= t <= t1)
    res.expected = in_window * args.viewers // args.producers
    res.rate = res.delivered / span
    res.p50 = bl.percentile(lats, 50)
    res.p99 = bl.percentile(lats, 99)
    res.pmax = max(lats) if lats else math.nan
    cpu = sum(cpu1) - sum(cpu0)
    res.cpu_pct = ((cpu1[0] - cpu0[0]) / span * 100, (cpu1[1] - cpu0[1]) / span * 100)
    res.cpu_ms_per_1000 = cpu * 1000 / res.delivered * 1000 if res.delivered else math.nan
    res.rss_kb_per_viewer = (rss1 - rss0) / args.viewers / 1024
    if res.delivered:
        usr = sum(b[0] - a[0] for a, b in zip(split0, split1, strict=True))
        sys_ = sum(b[1] - a[1] for a, b in zip(split0, split1, strict=True))
        res.usr_sys = (usr * 1e6 / res.delivered, sys_ * 1e6 / res.delivered)
        res.faults = sum(b[2] - a[2] for a, b in zip(split0, split1, strict=True)) / res.delivered
        res.syscalls = (
            sum(b[0] - a[0] for a, b in zip(io0, io1, strict=True)) / res.delivered,
            sum(b[1] - a[1] for a, b in zip(io0, io1, strict=True)) / res.delivered,
        )
    res.client_cpu_pct = (ccpu1 - ccpu0) / span * 100
    print(
        f"  {server}: window {span:.1f} s ({t0:.3f}..{t1:.3f}), {in_window} events published",
        flush=True,
    )
    return res


# --------------------------------------------------------------------------- once per node


async def serialization_check(viewers: int = 200) -> tuple[int, int, int]:
    """Publish one event through an in-process hub with ``viewers`` local viewers (half
    reading the WebSocket form, half the SSE form); returns (viewers, json.dumps calls,
    json.loads calls) made for it."""
    import json

    from mcustt import events, logs
    from mcustt.config import Settings
    from mcustt.fanout import Hub

    logs.configure("warning", stream=sys.stderr)
    counts = {"dumps": 0, "loads": 0}

    class CountingJson:
        def __getattr__(self, name: str) -> Any:
            return getattr(json, name)

        def dumps(self, *a: Any, **kw: Any) -> str:
            counts["dumps"] += 1
            return json.dumps(*a, **kw)

        def loads(self, *a: Any, **kw: Any) -> Any:
            counts["loads"] += 1
            return json.loads(*a, **kw)

    async def main() -> None:
        hub = Hub(Settings())
        await hub.start()
        joined = [await hub.join("s1") for _ in range(viewers)]
        original = events.json
        events.json = CountingJson()  # type: ignore[assignment]
        try:
            await hub.publish(
                "s1", events.transcript(seq=1, text="hi", is_final=True, lang="en", ts=0)
            )
            for i, v in enumerate(joined):
                item = v.queue.get_nowait()
                assert isinstance(item, events.Event)
                wire = item.raw if i % 2 == 0 else item.sse
                assert wire
        finally:
            events.json = original  # type: ignore[assignment]
        await hub.aclose()

    await main()
    return viewers, counts["dumps"], counts["loads"]


# --------------------------------------------------------------------------- driver


def print_runs(runs: list[Run]) -> None:
    headers = [
        "server",
        "viewers",
        "held",
        "delivered",
        "msg/s",
        "lat p50",
        "lat p99",
        "lat max",
        "CPU ms/1k msg",
        "usr/sys us/msg",
        "faults/msg",
        "rd/wr calls/msg",
        "node %cpu A/B",
        "RSS KB/viewer",
        "cli %cpu",
        "load",
        "steal%",
    ]
    rows = [
        [
            r.server,
            str(r.viewers),
            str(r.held),
            f"{r.delivered}/{r.expected}",
            bl.fmt(r.rate, 0),
            bl.fmt(r.p50),
            bl.fmt(r.p99),
            bl.fmt(r.pmax),
            bl.fmt(r.cpu_ms_per_1000, 2),
            f"{r.usr_sys[0]:.1f}/{r.usr_sys[1]:.1f}",
            bl.fmt(r.faults, 2),
            f"{r.syscalls[0]:.2f}/{r.syscalls[1]:.2f}",
            f"{r.cpu_pct[0]:.0f}/{r.cpu_pct[1]:.0f}",
            bl.fmt(r.rss_kb_per_viewer),
            bl.fmt(r.client_cpu_pct, 0),
            bl.fmt(r.load, 2),
            bl.fmt(r.steal),
        ]
        for r in runs
    ]
    print(bl.table(headers, rows), flush=True)
    for r in runs:
        if r.errors:
            print(f"  {r.server}: errors {r.errors[:3]}")


async def main_async(args: argparse.Namespace) -> int:
    nofile = bl.raise_nofile()
    need = args.viewers + 200
    if nofile < need:
        print(f"RLIMIT_NOFILE is {nofile}; {need} needed", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_fanout_"))
    pg_name = None
    if args.db == "postgres":
        pg_name = "bench_" + uuid.uuid4().hex[:10]
        database_url = bl.create_pg_database(args.pg_url, pg_name)
    else:
        database_url = bl.migrate_sqlite(tmp / "bench.db")
    print(
        f"# bench_fanout: viewers={args.viewers} sessions(producers)={args.producers} "
        f"rate={args.rate}/s/session seconds={args.seconds} client_procs={args.client_procs} "
        f"db={args.db} cores={os.cpu_count()} nofile={nofile} "
        f"ephemeral_ports={bl.ephemeral_ports()} load={bl.loadavg():.2f}",
        flush=True,
    )
    runs: list[Run] = []
    try:
        for server in ("mcustt", "bare") if args.servers == "both" else (args.servers,):
            runs.append(await run_once(args, server, tmp, database_url))
            print_runs(runs[-1:])
    finally:
        if pg_name:
            bl.drop_pg_database(args.pg_url, pg_name)
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print_runs(runs)
    n, dumps, loads = await serialization_check()
    print()
    print(
        f"serialization: one event to {n} local viewers (half WS, half SSE) cost "
        f"{dumps} json.dumps and {loads} json.loads in the node "
        f"({'once per node' if dumps <= 2 and loads <= 1 else 'PER VIEWER'}: the publisher's "
        "dumps, the SSE encoding cached on the shared Event, one parse on receipt)"
    )
    m = next((r for r in runs if r.server == "mcustt"), None)
    b = next((r for r in runs if r.server == "bare"), None)
    if m and b:
        print()
        print("mcustt vs bare broadcast (target: each ratio <= 1.5, 5,000 viewers held):")
        checks = [
            ("viewers held", m.held, b.held, m.held >= min(5000, args.viewers)),
            ("memory per viewer", m.rss_kb_per_viewer, b.rss_kb_per_viewer, None),
            ("CPU per delivered msg", m.cpu_ms_per_1000, b.cpu_ms_per_1000, None),
            ("latency p99", m.p99, b.p99, None),
        ]
        for name, mv, bv, ok in checks:
            if ok is None:
                ratio = mv / bv if bv else math.nan
                verdict = "MET" if ratio <= 1.5 else "MISSED"
                print(
                    f"  {name:22s} {bl.fmt(mv, 2):>9} vs {bl.fmt(bv, 2):>9}  x{ratio:.2f}  {verdict}"
                )
            else:
                print(f"  {name:22s} {mv:>9} vs {bv:>9}         {'MET' if ok else 'MISSED'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--viewers", type=int, default=5000)
    parser.add_argument("--producers", type=int, default=10, help="sessions, each with a publisher")
    parser.add_argument("--rate", type=float, default=2.0, help="events a second per session")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--servers", choices=["both", "mcustt", "bare"], default="both")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--server-env", action="append", default=[], help="KEY=VALUE for mcustt nodes"
    )
    parser.add_argument("--py-spy", default="", help="profile the mcustt nodes to PREFIX-A/B.txt")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
