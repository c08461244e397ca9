#!/usr/bin/env python
"""Node kill, again and again (issue 13, scenario 1), with figures.

    python scripts/fault_node_kill.py --rounds 6 --kill-every-s 20

Two ``mcustt serve`` nodes (sphinx) on a fresh PostgreSQL database and Redis. One
producer (the Python client, given both nodes' URLs) streams real speech in real time,
the standup fixture over and over; one viewer watches, and resumes on the other node
with its last seq whenever its node goes. Every ``--kill-every-s`` seconds the node the
producer is on is SIGKILLed and started again on the same port. Per kill it prints how
long until the producer was accepted on the other node; at the end the producer is
stopped and it checks the stored transcript (seqs 1..N, no gap) against what the viewer
saw (every final once, in order) and what the producer got. Exits 1 on any failure of
the promise or an acceptance slower than ``--max-accept-s`` (15 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import benchlib
import websockets

from mcustt.client import Client

FIXTURE = benchlib.ROOT / "tests" / "fixtures" / "standup_en.wav"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Viewer:
    """A viewer that resumes on the next node with ``lastSeq`` when its socket drops."""

    def __init__(self, urls: list[str], token: str) -> None:
        self.urls = urls
        self.token = token
        self.finals: list[tuple[int, str]] = []
        self.resumes = 0

    async def run(self) -> None:
        i = 0
        while True:
            last = self.finals[-1][0] if self.finals else 0
            url = f"{self.urls[i]}/ws/subscribe?token={self.token}&lastSeq={last}"
            try:
                async with websockets.connect(url, max_size=None) as ws:
                    async for raw in ws:
                        msg = json.loads(raw)
                        if msg.get("type") == "transcript" and msg.get("isFinal"):
                            if not msg.get("revised"):
                                self.finals.append((msg["seq"], msg["text"]))
                        elif msg.get("type") == "session-end":
                            return
            except (OSError, websockets.ConnectionClosed, websockets.InvalidStatus):
                pass
            i = (i + 1) % len(self.urls)
            self.resumes += 1
            await asyncio.sleep(0.2)


async def run(args: argparse.Namespace, tmp: Path) -> int:
    name = "kill_" + uuid.uuid4().hex[:10]
    env = {
        "MCUSTT_DATABASE_URL": benchlib.create_pg_database(args.pg_url, name),
        "MCUSTT_REDIS_URL": args.redis_url,
        "MCUSTT_REDIS_PREFIX": name,
        "MCUSTT_RECOGNIZER": "sphinx",
        "MCUSTT_RECOGNIZER_WORKERS": "1",
        "MCUSTT_LOG_LEVEL": "warning",
        "MCUSTT_MAX_LOOP_LAG_MS": "0",
        "MCUSTT_MAX_LOOP_BUSY": "0",
    }
    ports = [benchlib.free_port(), benchlib.free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs = [benchlib.spawn_mcustt(env, p, tmp / f"node{i}.log") for i, p in enumerate(ports)]
    try:
        for i, p in enumerate(ports):
            await benchlib.wait_http(p, procs[i], tmp / f"node{i}.log")
        return await rounds(args, env, urls, ports, procs, tmp)
    finally:
        for proc in procs:
            benchlib.stop_proc(proc)
        benchlib.drop_pg_database(args.pg_url, name)


async def rounds(
    args: argparse.Namespace,
    env: dict[str, str],
    urls: list[str],
    ports: list[int],
    procs: list[Any],
    tmp: Path,
) -> int:
    key = await _tenant(urls[0])
    pcm = FIXTURE.read_bytes()[44:]
    accepts: list[float] = []
    async with Client(urls[0], tenant_key=key) as client:
        session = await client.create_session(title="node kill")
        viewer = Viewer([u.replace("http", "ws", 1) for u in urls[::-1]], session["subscribeToken"])
        watching = asyncio.create_task(viewer.run())
        producer = client.producer(session, realtime=True, failover=[urls[1]])
        await producer.connect()
        stop = asyncio.Event()

        async def talk() -> None:
            while not stop.is_set():
                for offset in range(0, len(pcm), 3200):
                    if stop.is_set():
                        break
                    await producer.send(pcm[offset : offset + 3200])

        talking = asyncio.create_task(talk())
        for n in range(args.rounds):
            await asyncio.sleep(args.kill_every_s)
            on = urls.index(producer.client.ws_url.replace("ws", "http", 1))
            reconnects = producer.reconnects
            killed = time.monotonic()
            procs[on].kill()
            await asyncio.to_thread(procs[on].wait, 10)
            while producer.reconnects == reconnects:
                if time.monotonic() - killed > 60:
                    log(f"kill {n + 1}: the producer did not come back within 60 s")
                    return 1
                await asyncio.sleep(0.05)
            accepts.append(time.monotonic() - killed)
            log(
                f"kill {n + 1}: node{on} killed; producer accepted on node{1 - on} after "
                f"{accepts[-1]:.1f} s; {len(producer.finals)} finals so far, "
                f"{producer.frames_dropped} frames dropped"
            )
            procs[on] = benchlib.spawn_mcustt(env, ports[on], tmp / f"node{on}.log")
            await benchlib.wait_http(ports[on], procs[on], tmp / f"node{on}.log")
        stop.set()
        await talking
        await producer.stop()
        await asyncio.wait_for(watching, 60)
        doc = await producer.client.transcript(session["sessionId"])
    stored = [(line["seq"], line["text"]) for line in doc["lines"]]
    gap_free = [s for s, _ in stored] == list(range(1, len(stored) + 1))
    viewer_ok = viewer.finals == stored
    producer_ok = [(e.seq, e.text) for e in producer.finals] == stored
    print()
    print(
        benchlib.table(
            ["kills", "accept min s", "median s", "max s", "finals", "viewer resumes"],
            [
                [
                    str(len(accepts)),
                    benchlib.fmt(min(accepts)),
                    benchlib.fmt(statistics.median(accepts)),
                    benchlib.fmt(max(accepts)),
                    str(len(stored)),
                    str(viewer.resumes),
                ]
            ],
            title="node kill: producer failover",
        )
    )
    print(
        f"transcript gap-free: {gap_free}; viewer saw every final once in order: {viewer_ok}; "
        f"producer has every final: {producer_ok}"
    )
    ok = gap_free and viewer_ok and producer_ok and max(accepts) < args.max_accept_s
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


async def _tenant(url: str) -> str:
    async with Client(url, admin_token=benchlib.ADMIN) as admin:
        return (await admin.create_tenant("node kill"))["apiKey"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--kill-every-s", type=float, default=20.0)
    parser.add_argument("--max-accept-s", type=float, default=15.0)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "MCUSTT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("MCUSTT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="mcustt-kill-") as tmp,
        contextlib.suppress(KeyboardInterrupt),
    ):
        return asyncio.run(run(args, Path(tmp)))
    return 1


if __name__ == "__main__":
    sys.exit(main())
