"""Load WHIP ingest: N concurrent aiortc producers against a real server process.

Usage::

    .venv/bin/python scripts/bench_whip.py --streams 1,5,10 --seconds 20

For each N: a fresh ``python -m mcustt serve`` (null recognizer, so the figures are the
WebRTC path: ICE/DTLS/SRTP, Opus decode, resample, VAD, usage writes) on a migrated
temp SQLite database (or ``--database-url``, migrated first), gathering on 127.0.0.1.
Then:

* **offer→answer latency**, two ways: ``--probes`` offers one after another (each
  hung up before it connects), and the N producers' offers fired at once;
* **server CPU per stream** (% of one core), from ``/proc/<pid>/stat`` utime+stime
  over a steady window of ``--seconds`` once every producer is connected and has
  streamed for a warm-up, minus the idle server's own CPU (also printed);
* audio received vs sent, from each session's ``audioSeconds``.

Producers play ``tests/fixtures/standup_en.wav`` in a loop at real-time pace, each its
own aiortc peer connection (Opus encode), all in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from whipclient import Published, close, make_offer, publish, wait_connected  # noqa: E402

ADMIN = "bench-admin-token"
TICK = os.sysconf("SC_CLK_TCK")
WARMUP_S = 3.0
IDLE_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_pcm() -> bytes:
    with wave.open(str(ROOT / "tests" / "fixtures" / "standup_en.wav"), "rb") as w:
        return w.readframes(w.getnframes())


@contextlib.asynccontextmanager
async def server(workdir: Path, database_url: str | None) -> Any:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MCUSTT_DATABASE_URL": database_url or f"sqlite:///{workdir}/bench.db",
        "MCUSTT_ADMIN_TOKEN": ADMIN,
        "MCUSTT_PUBLIC_URL": url,
        "MCUSTT_RECOGNIZER": "null",
        "MCUSTT_SUMMARIZER": "extractive",
        "MCUSTT_WEBRTC_HOST_ADDRESSES": "127.0.0.1",
        "MCUSTT_LOG_LEVEL": "info",  # the access log's ms and the answer's phases
        "MCUSTT_RATE_WS_UPGRADE": "100000/minute",
        "MCUSTT_MAX_CONCURRENT_INGEST": "1000",
    }
    subprocess.run(
        [sys.executable, "-m", "mcustt", "migrate"],
        env=env,
        check=True,
        capture_output=True,
    )
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcustt", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            for _ in range(300):
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await c.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            yield proc, c, log_path
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 30)
        except TimeoutError:
            proc.kill()


async def probe_latency(c: httpx.AsyncClient, key: str, probes: int) -> list[float]:
    """Serial offers, each hung up before connecting: POST round trip in ms."""
    r = await c.post("/api/sessions", json={"title": "probe"}, headers={"x-tenant-key": key})
    session = r.json()
    token = session["ingestToken"]
    out: list[float] = []
    for _ in range(probes):
        pc, offer = await make_offer()
        try:
            started = time.perf_counter()
            r = await c.post(
                "/api/webrtc",
                params={"token": token},
                content=offer,
                headers={"content-type": "application/sdp"},
            )
            out.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 201, r.text
            assert (await c.delete(r.headers["location"])).status_code == 204
        finally:
            await close(pc)
        r = await c.post(
            f"/api/sessions/{session['sessionId']}/ingest-token",
            json={"ownerSecret": session["ownerSecret"]},
        )
        token = r.json()["ingestToken"]
    return out


async def run(
    streams: int, seconds: float, probes: int, pcm: bytes, database_url: str | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-whip-") as tmp:
        async with server(Path(tmp), database_url) as (proc, c, log_path):
            r = await c.post(
                "/api/admin/tenants",
                json={"name": "bench", "maxSessions": 1000},
                headers={"authorization": f"Bearer {ADMIN}"},
            )
            assert r.status_code == 201, r.text
            key = r.json()["apiKey"]

            serial = await probe_latency(c, key, probes)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            await asyncio.sleep(IDLE_S)
            idle_pct = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100

            sessions = []
            for _ in range(streams):
                r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": key})
                sessions.append(r.json())
            pubs: list[Published] = list(
                await asyncio.gather(
                    *(publish(c, pcm, token=s["ingestToken"], loop=True) for s in sessions)
                )
            )
            try:
                await asyncio.gather(*(wait_connected(p.pc, 20) for p in pubs))
                await asyncio.sleep(WARMUP_S)
                sent0 = [p.track.sent for p in pubs]
                cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
                await asyncio.sleep(seconds)
                cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
                sent1 = [p.track.sent for p in pubs]
            finally:
                for p in pubs:
                    with contextlib.suppress(Exception):
                        await c.delete(p.location)
                await asyncio.gather(*(close(p.pc) for p in pubs))
            sent_ms = sum(p.track.sent for p in pubs) * 20
            got_ms = 0.0
            for s in sessions:
                r = await c.get(f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": key})
                got_ms += r.json()["audioSeconds"] * 1000
            phases = server_phases(log_path)
            window = t1 - t0
            total_pct = (cpu1 - cpu0) / window * 100
            realtime = sum(b - a for a, b in zip(sent0, sent1, strict=True)) * 0.020 / window
            return {
                "streams": streams,
                "serial": serial,
                "burst": [p.answer_ms for p in pubs],
                "idle_pct": idle_pct,
                "total_pct": total_pct,
                "per_stream_pct": (total_pct - idle_pct) / streams,
                "window_s": window,
                "realtime_streams": realtime,
                "sent_ms": sent_ms,
                "got_ms": got_ms,
                "server": phases,
            }


def server_phases(log_path: Path) -> dict[str, list[float]]:
    """Server-side view of each answered offer, from its JSON log lines."""
    out: dict[str, list[float]] = {"request_ms": [], "negotiate_ms": [], "admit_ms": []}
    for line in log_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if doc.get("event") == "request" and doc.get("path") == "/api/webrtc":
                if doc.get("status") == 201:
                    out["request_ms"].append(float(doc["ms"]))
            elif doc.get("event") == "webrtc offer answered":
                out["negotiate_ms"].append(float(doc["negotiate_ms"]))
                out["admit_ms"].append(float(doc["admit_ms"]))
    return out


def report(r: dict[str, Any]) -> None:
    s, b = r["serial"], r["burst"]
    print(
        f"N={r['streams']:>3}  answer serial p50 {statistics.median(s):6.1f} ms "
        f"p99 {pct(s, 0.99):6.1f} ms | burst of {len(b)} p50 {statistics.median(b):6.1f} ms "
        f"p99 {pct(b, 0.99):6.1f} ms"
    )
    print(
        f"       server CPU {r['total_pct']:5.1f} % of a core over {r['window_s']:.1f} s "
        f"(idle {r['idle_pct']:.1f} %) -> {r['per_stream_pct']:.2f} % per stream; "
        f"{r['realtime_streams']:.2f} streams of audio/s sent; "
        f"audio received {r['got_ms'] / 1000:.1f} s of {r['sent_ms'] / 1000:.1f} s sent "
        f"({r['got_ms'] / max(1, r['sent_ms']) * 100:.1f} %)"
    )
    srv = r["server"]
    if srv["request_ms"]:
        req, neg, adm = srv["request_ms"], srv["negotiate_ms"], srv["admit_ms"]
        print(
            f"       server side, all offers: request p50 {statistics.median(req):.1f} ms "
            f"p99 {pct(req, 0.99):.1f} ms; aiortc negotiate+gather p50 "
            f"{statistics.median(neg):.1f} ms p99 {pct(neg, 0.99):.1f} ms; admit+open p50 "
            f"{statistics.median(adm):.1f} ms p99 {pct(adm, 0.99):.1f} ms"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,5,10", help="N, or a list: 1,5,10")
    parser.add_argument("--seconds", type=float, default=20.0, help="steady window")
    parser.add_argument("--probes", type=int, default=20, help="serial offers for latency")
    parser.add_argument(
        "--database-url", help="an empty database to use instead of a temp SQLite file"
    )
    args = parser.parse_args()
    pcm = load_pcm()
    print(f"host: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    for n in [int(x) for x in args.streams.split(",")]:
        report(await run(n, args.seconds, args.probes, pcm, args.database_url))


if __name__ == "__main__":
    asyncio.run(main())
