"""Benchmark ``/ws/stt`` ingest against a bare uvicorn WebSocket echo server.

Usage (from the repo root)::

    .venv/bin/python scripts/bench_ingest.py                       # null, 100 and 200 streams
    .venv/bin/python scripts/bench_ingest.py --streams 50,100,200 --seconds 15
    .venv/bin/python scripts/bench_ingest.py --search               # max N at p99 < 50 ms, both
    .venv/bin/python scripts/bench_ingest.py --search --servers sink,echo,mcustt
    .venv/bin/python scripts/bench_ingest.py --recognizer sphinx    # 4, 6, 8 sphinx streams
    .venv/bin/python scripts/bench_ingest.py --recognizer sphinx --search
    .venv/bin/python scripts/bench_ingest.py --overload              # past capacity (issue 13)
    .venv/bin/python scripts/bench_ingest.py --overload --recognizer sphinx --workers 2

What runs:

* the server under test (``python -m mcustt serve``, SQLite or ``--db postgres``, memory
  broker unless ``--redis``) and, in the same run, a *bare echo* server: an ASGI app under
  the very same uvicorn options (:func:`mcustt.server.uvicorn_options`) that sends every
  audio frame back and answers pings with pongs (the baseline the target is set
  against). ``--servers echo,sink,mcustt`` adds a *sink*, the same app discarding audio:
  nothing that reads frames can be cheaper, so mcustt/sink is a floor for the ratio;
* N producers in ``--client-procs`` separate processes (each an asyncio loop holding many
  raw WebSocket clients whose masked audio frames are built once), so that clients do not
  use the server's CPU account. Every producer sends a 640-byte PCM frame every 20 ms
  (producers are phase-staggered over the 20 ms like independent MCUs) of
  ``tests/fixtures/hello_en.wav`` + 1.5 s of silence, looped, each from its own offset,
  and every 25th frame (500 ms) a ``{"type":"ping","ts":<ms>}`` control right after it.

Figures (over the steady window after ``--warmup``):

* lag: the server handles a socket's messages in order, so ``now - ts`` at the pong is
  how far frame handling lags behind real time (p50 / p99 / max; pongs missing after
  the run count as lost and fail the level);
* CPU: utime+stime of the server process (plus its recognizer workers) from
  ``/proc/<pid>/stat`` over the window, as % of one core per stream and us per frame;
* memory: server RSS after the window minus RSS before the producers connected, / N
  (and the recognizer workers' RSS for sphinx);
* sphinx: final latency per utterance, matched to the frame where the server's own VAD
  (the same :class:`mcustt.vad.Segmenter`, replayed here on the exact bytes sent) closes
  the utterance ("VAD end": what the pipeline controls), and to the last frame the VAD
  classifies as speech ("speech end": adds the fixed 600 ms VAD hangover).

``--overload`` (issue 13's admission control) runs one mcustt node with
``MCUSTT_MAX_LOOP_LAG_MS=--overload-lag-ms``, ``MCUSTT_MAX_LOOP_BUSY=--overload-busy``
and ``MCUSTT_MAX_RECOGNIZER_LOAD=--overload-load`` (the server's defaults unless given)
and keeps adding producers (``--step`` every ``--step-s``) until
``--streams`` were tried, far past what it admits; then it streams ``--seconds`` more.
It prints how many were admitted and refused (and whether every refusal was a clean 503
``NODE_OVERLOADED`` with ``Retry-After``), the lag p99 of the admitted sessions from 2 s
after the last admission, admitted producers dropped, and crashes; exit 1 on any. It
also prints the node's admission signals every 2 s (from its ``/metrics``).

A level passes when every producer connected, none was dropped, no pong was lost and
lag p99 < ``--lag-bound``; for sphinx also final p50 (from VAD end) < 500 ms and >= 90 %
of the window's utterances got their final. ``--search`` finds the largest passing N
for each server in at most ``--max-steps`` runs each (x1.5 up, then bisection).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
import wave
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as MPEvent
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import itertools

import benchlib as bl

FRAME_BYTES = 640  # 20 ms of PCM16 16 kHz mono
FRAME_S = 0.02
PING_EVERY = 25  # frames: one ping every 500 ms
BUCKETS = 10  # producers of a client process are spread over 10 phases of 2 ms
TICK_S = FRAME_S / BUCKETS
SILENCE_S = 1.5
VAD_HANGOVER_FRAMES = 30  # mcustt.vad.Segmenter default hangover_ms=600
FIXTURE = bl.ROOT / "tests" / "fixtures" / "hello_en.wav"


# --------------------------------------------------------------------------- audio


def audio_loop() -> list[bytes]:
    """The looped PCM, as 640-byte frames."""
    with wave.open(str(FIXTURE), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        pcm = w.readframes(w.getnframes())
    pcm += b"\x00\x00" * int(16000 * SILENCE_S)
    pcm += b"\x00" * (-len(pcm) % FRAME_BYTES)
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def utterance_marks(frames: list[bytes], offset: int, count: int) -> dict[int, tuple[str, int]]:
    """Replay the server's VAD on what a producer will send: frame index -> mark.

    ``("end", u)``: the frame whose handling makes the segmenter close utterance ``u``;
    ``("speech", u)``: the last frame of ``u`` the VAD classifies as speech.
    """
    import webrtcvad

    from mcustt.config import Settings
    from mcustt.vad import End, Segmenter

    settings = Settings()
    seg = Segmenter(
        aggressiveness=settings.vad_aggressiveness, max_ms=int(settings.max_utterance_s * 1000)
    )
    vad = webrtcvad.Vad(settings.vad_aggressiveness)
    marks: dict[int, tuple[str, int]] = {}
    last_speech = -1
    utt = 0
    for k in range(count):
        frame = frames[(offset + k) % len(frames)]
        if vad.is_speech(frame, 16000):
            last_speech = k
        if any(isinstance(ev, End) for ev in seg.feed(frame)):
            marks[k] = ("end", utt)
            if last_speech >= 0:
                marks.setdefault(last_speech, ("speech", utt))
            utt += 1
    return marks


# --------------------------------------------------------------------------- client process


@dataclass
class ClientJob:
    index: int
    port: int
    paths: list[str]
    offsets: list[int]
    phases: list[int]  # which of the 25 frames of a ping period carries the ping
    expect_ready: bool
    track_frames: int  # >0: record send times of utterance marks over this many frames


class Producer:
    def __init__(
        self, path: str, offset: int, phase: int, marks: dict[int, tuple[str, int]]
    ) -> None:
        self.path = path
        self.pos = offset
        self.phase = phase
        self.k = 0
        self.marks = marks
        self.ws: bl.WSClient | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ping_ts: list[float] = []
        self.pongs: list[tuple[float, float]] = []  # (ts ms, lag ms)
        self.finals: list[float] = []  # arrival wall ms
        self.marked: list[tuple[str, int, float]] = []  # (kind, utterance, sent wall ms)
        self.errors: list[str] = []
        self.stopped = False

    def on_text(self, payload: bytes) -> None:
        now = time.time() * 1000
        msg = json.loads(payload)
        kind = msg.get("type")
        if kind == "pong":
            ts = float(msg["ts"])
            self.pongs.append((ts, now - ts))
        elif kind == "transcript":
            if msg.get("isFinal"):
                self.finals.append(now)
        elif kind == "ready":
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == "error":
            self.errors.append(f"{msg.get('code')}: {msg.get('message')}")

    def send(self, frames: list[bytes]) -> None:
        ws = self.ws
        assert ws is not None
        ws.write(frames[self.pos])
        k = self.k
        self.k = k + 1
        self.pos += 1
        if self.pos == len(frames):
            self.pos = 0
        if self.marks:
            mark = self.marks.get(k)
            if mark is not None:
                self.marked.append((mark[0], mark[1], time.time() * 1000))
        if k % PING_EVERY == self.phase:
            text = f'{{"type":"ping","ts":{time.time() * 1000:.3f}}}'
            ws.send_text(text)
            self.ping_ts.append(float(text[20:-1]))


def client_main(job: ClientJob, ready_q: Any, go: MPEvent, stop: MPEvent, result_q: Any) -> None:
    bl.raise_nofile()
    import uvloop

    try:
        result = uvloop.run(_client(job, ready_q, go, stop))
    except BaseException as exc:
        result = {"index": job.index, "fatal": repr(exc)}
    result_q.put(result)


async def _client(job: ClientJob, ready_q: Any, go: MPEvent, stop: MPEvent) -> dict[str, Any]:
    key = os.urandom(4)
    pcm = audio_loop()
    frames = [bl.client_frame(2, f, key) for f in pcm]
    producers = [
        Producer(
            path,
            off,
            phase,
            utterance_marks(pcm, off, job.track_frames) if job.track_frames else {},
        )
        for path, off, phase in zip(job.paths, job.offsets, job.phases, strict=True)
    ]
    sem = asyncio.Semaphore(16)

    async def connect(p: Producer) -> None:
        async with sem:
            p.ws = await bl.ws_connect(job.port, p.path, p.on_text, key)
            if job.expect_ready:
                await asyncio.wait_for(p.ready, 60)

    outcomes = await asyncio.gather(*(connect(p) for p in producers), return_exceptions=True)
    failures = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    live = [p for p, o in zip(producers, outcomes, strict=True) if not isinstance(o, BaseException)]
    ready_q.put((job.index, len(live), failures[:3]))
    while not go.is_set():
        await asyncio.sleep(0.01)

    loop = asyncio.get_running_loop()
    buckets = [live[b::BUCKETS] for b in range(BUCKETS)]
    late: list[float] = []
    samples: list[tuple[float, int]] = []  # (wall s, frames sent so far)
    sent = 0
    start = loop.time() + 0.02
    j = 0
    while True:
        due = start + j * TICK_S
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
            now = loop.time()
        elif j % BUCKETS == 0:
            await asyncio.sleep(0)  # behind schedule: still let replies in
        late.append(now - due)
        bucket = buckets[j % BUCKETS]
        for p in bucket:
            if p.ws is not None and not p.ws.closed.done():
                p.send(frames)
        sent += len(bucket)
        j += 1
        if j % 50 == 0:
            samples.append((time.time(), sent))
            if stop.is_set():
                break

    # Pongs still owed: wait a little, then hang up.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(len(p.pongs) < len(p.ping_ts) for p in live):
        await asyncio.sleep(0.05)
    dropped = sum(1 for p in live if p.ws is not None and p.ws.closed.done())
    await asyncio.gather(*(p.ws.close() for p in live if p.ws is not None), return_exceptions=True)
    return {
        "index": job.index,
        "connected": len(live),
        "failures": failures,
        "dropped": dropped,
        "ping_ts": [p.ping_ts for p in live],
        "pongs": [p.pongs for p in live],
        "finals": [p.finals for p in live],
        "marked": [p.marked for p in live],
        "errors": [e for p in live for e in p.errors][:5],
        "late_ms": [x * 1000 for x in late],
        "samples": samples,
    }


# --------------------------------------------------------------------------- one level


@dataclass
class Level:
    server: str
    streams: int
    connected: int = 0
    dropped: int = 0
    lag_p50: float = math.nan
    lag_p99: float = math.nan
    lag_max: float = math.nan
    pings: int = 0
    lost: int = 0
    cpu_pct_per_stream: float = math.nan
    us_per_frame: float = math.nan
    worker_us_per_frame: float = math.nan
    rss_kb_per_session: float = math.nan
    worker_rss_mb: float = math.nan
    worker_rss_kb_per_session: float = math.nan
    final_p50: float = math.nan
    final_p99: float = math.nan
    speech_p50: float = math.nan
    speech_p99: float = math.nan
    utterances: int = 0
    finals: int = 0
    client_late_p99: float = math.nan
    client_cpu_pct: float = math.nan
    load: float = math.nan
    steal: float = math.nan
    errors: list[str] = field(default_factory=list)
    passed: bool = False


@dataclass
class Env:
    args: argparse.Namespace
    tmp: Path
    database_url: str
    pcm_frames: int
    ctx: Any


def interp(samples: list[tuple[float, int]], t: float) -> float:
    if not samples:
        return 0.0
    if t <= samples[0][0]:
        return float(samples[0][1])
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * (t - t0) / (t1 - t0 or 1)
    return float(samples[-1][1])


async def run_level(env: Env, server: str, n: int) -> Level:
    args = env.args
    level = Level(server, n)
    port = bl.free_port()
    log_path = env.tmp / f"{server}-{n}-{port}.log"
    sphinx = server == "mcustt" and args.recognizer == "sphinx"
    if server == "mcustt":
        server_env = {
            "MCUSTT_DATABASE_URL": env.database_url,
            "MCUSTT_RECOGNIZER": args.recognizer,
            "MCUSTT_RECOGNIZER_WORKERS": str(args.workers),
        }
        server_env.update(kv.split("=", 1) for kv in args.server_env)
        if args.redis:
            server_env["MCUSTT_REDIS_URL"] = args.redis_url
            server_env["MCUSTT_REDIS_PREFIX"] = "bench" + uuid.uuid4().hex[:8]
        proc = bl.spawn_mcustt(server_env, port, log_path)
    else:
        proc = bl.spawn_bare(server, port, log_path)
    clients: list[Any] = []
    try:
        await bl.wait_http(port, proc, log_path)
        if server == "mcustt":
            _, sessions = await bl.provision(f"http://127.0.0.1:{port}", n, name=f"bench-{n}")
            paths = [f"/ws/stt?token={s['ingestToken']}" for s in sessions]
        else:
            paths = ["/ws/stt"] * n
        await asyncio.sleep(1.0)
        pid = proc.pid
        rss0 = bl.rss_bytes(pid)
        workers = bl.descendants(pid)
        wrss0 = sum(bl.rss_bytes(w) for w in workers)

        rng = random.Random(n)
        offsets = [rng.randrange(env.pcm_frames) for _ in range(n)]
        phases = [i % PING_EVERY for i in range(n)]
        track = int((args.warmup + args.seconds + 10) / FRAME_S) if sphinx else 0
        k = max(1, min(args.client_procs, n))
        ready_q, result_q = env.ctx.Queue(), env.ctx.Queue()
        go, stop = env.ctx.Event(), env.ctx.Event()
        for c in range(k):
            idx = list(range(c, n, k))
            job = ClientJob(
                c,
                port,
                [paths[i] for i in idx],
                [offsets[i] for i in idx],
                [phases[i] for i in idx],
                server == "mcustt",
                track,
            )
            p = env.ctx.Process(
                target=client_main, args=(job, ready_q, go, stop, result_q), daemon=True
            )
            p.start()
            clients.append(p)
        failures: list[str] = []
        for _ in range(k):
            _, ok, errs = await asyncio.to_thread(ready_q.get, True, 60 + n * 0.2)
            level.connected += ok
            failures += errs
        level.errors += failures
        go.set()
        await asyncio.sleep(args.warmup)

        client_pids = [p.pid for p in clients if p.pid]
        workers = bl.descendants(pid)
        print(f"  {server} N={n}: {level.connected} connected; window starts", flush=True)
        t0 = time.time()
        host0 = bl.host_cpu()
        cpu0 = bl.cpu_seconds(pid)
        wcpu0 = sum(bl.cpu_seconds(w) for w in workers)
        ccpu0 = sum(bl.cpu_seconds(c) for c in client_pids)
        spy = None
        if args.py_spy and server == "mcustt":
            spy = await bl.py_spy(pid, args.seconds, f"{args.py_spy}-{server}-{n}.txt")
        await asyncio.sleep(args.seconds)
        t1 = time.time()
        level.steal = bl.steal_pct(host0, bl.host_cpu())
        cpu1 = bl.cpu_seconds(pid)
        wcpu1 = sum(bl.cpu_seconds(w) for w in workers)
        ccpu1 = sum(bl.cpu_seconds(c) for c in client_pids)
        rss1 = bl.rss_bytes(pid)
        wrss1 = sum(bl.rss_bytes(w) for w in bl.descendants(pid))
        level.load = bl.loadavg()
        stop.set()
        if spy is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(spy.wait(), 10)

        results = []
        for _ in range(k):
            results.append(await asyncio.to_thread(result_q.get, True, 60))
    finally:
        for p in clients:
            p.join(10)
            if p.is_alive():
                p.kill()
        bl.stop_proc(proc)

    lags: list[float] = []
    late: list[float] = []
    frames = 0.0
    ends: list[float] = []
    speech: list[float] = []
    for r in results:
        if "fatal" in r:
            level.errors.append(f"client {r['index']}: {r['fatal']}")
            continue
        level.dropped += r["dropped"]
        level.errors += r["errors"]
        late += r["late_ms"]
        frames += interp(r["samples"], t1) - interp(r["samples"], t0)
        for ping_ts, pongs, finals, marked in zip(
            r["ping_ts"], r["pongs"], r["finals"], r["marked"], strict=True
        ):
            window = [ts for ts in ping_ts if t0 * 1000 <= ts <= t1 * 1000]
            got = {ts: lag for ts, lag in pongs}
            level.pings += len(window)
            for ts in window:
                if ts in got:
                    lags.append(got[ts])
                else:
                    level.lost += 1
            if sphinx:
                e, s = _final_latencies(marked, finals, t0 * 1000, t1 * 1000, level)
                ends += e
                speech += s
    level.lag_p50 = bl.percentile(lags, 50)
    level.lag_p99 = bl.percentile(lags, 99)
    level.lag_max = max(lags) if lags else math.nan
    level.client_late_p99 = bl.percentile(late, 99)
    span = t1 - t0
    level.client_cpu_pct = (ccpu1 - ccpu0) / span * 100
    if frames > 0:
        level.us_per_frame = (cpu1 - cpu0) / frames * 1e6
        level.worker_us_per_frame = (wcpu1 - wcpu0) / frames * 1e6 if sphinx else math.nan
    level.cpu_pct_per_stream = ((cpu1 - cpu0) + (wcpu1 - wcpu0)) / span / n * 100
    level.rss_kb_per_session = (rss1 - rss0) / n / 1024
    if sphinx:
        level.worker_rss_mb = wrss1 / 2**20
        level.worker_rss_kb_per_session = (wrss1 - wrss0) / n / 1024
        level.final_p50 = bl.percentile(ends, 50)
        level.final_p99 = bl.percentile(ends, 99)
        level.speech_p50 = bl.percentile(speech, 50)
        level.speech_p99 = bl.percentile(speech, 99)
    level.passed = (
        level.connected == n
        and level.dropped == 0
        and level.lost == 0
        and level.lag_p99 < args.lag_bound
    )
    if sphinx:
        level.passed = (
            level.passed
            and level.final_p50 < args.final_bound
            and level.finals >= 0.9 * max(1, level.utterances)
        )
    return level


def _final_latencies(
    marked: list[tuple[str, int, float]], finals: list[float], w0: float, w1: float, level: Level
) -> tuple[list[float], list[float]]:
    """Match each final to the latest utterance end sent before it (one final each)."""
    ends = {u: t for kind, u, t in marked if kind == "end"}
    speech = {u: t for kind, u, t in marked if kind == "speech"}
    order = sorted(ends.items(), key=lambda item: item[1])
    matched: dict[int, float] = {}
    for arrival in finals:
        candidates = [u for u, t in order if t <= arrival and u not in matched]
        if candidates:
            matched[candidates[-1]] = arrival
    from_end: list[float] = []
    from_speech: list[float] = []
    for u, t in order:
        if not (w0 <= t <= w1 - 2000):  # the last 2 s: finals may still be on their way
            continue
        level.utterances += 1
        if u in matched:
            level.finals += 1
            from_end.append(matched[u] - t)
            if u in speech:
                from_speech.append(matched[u] - speech[u])
    return from_end, from_speech


# --------------------------------------------------------------------------- overload


class HeadClient(bl.WSClient):
    """:class:`benchlib.WSClient` that keeps a refused upgrade's head and body (the 503's
    ``Retry-After`` and envelope)."""

    def __init__(self, on_text: Any, key: bytes) -> None:
        super().__init__(on_text, key)
        self.head = b""
        self.body = b""

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done() and not self.head:
            raw = bytes(self.buf) + data
            end = raw.find(b"\r\n\r\n")
            if end >= 0 and b" 101 " not in raw[: raw.find(b"\r\n")] + b" ":
                self.head, self.body = raw[:end], raw[end + 4 :]
        super().data_received(data)


@dataclass
class OverloadJob:
    index: int
    port: int
    paths: list[str]
    offsets: list[int]
    phases: list[int]
    #: when (seconds after the start) each producer tries to connect
    attempts: list[float]


def overload_client_main(job: OverloadJob, go: MPEvent, stop: MPEvent, result_q: Any) -> None:
    bl.raise_nofile()
    import uvloop

    try:
        result = uvloop.run(_overload_client(job, go, stop))
    except BaseException as exc:
        result = {"index": job.index, "fatal": repr(exc)}
    result_q.put(result)


async def _overload_client(job: OverloadJob, go: MPEvent, stop: MPEvent) -> dict[str, Any]:
    """Producers that connect on a schedule, past the node's capacity; the admitted ones
    stream like :func:`_client`'s, the refused ones record the refusal."""
    key = os.urandom(4)
    pcm = audio_loop()
    frames = [bl.client_frame(2, f, key) for f in pcm]
    producers = [
        Producer(path, off, phase, {})
        for path, off, phase in zip(job.paths, job.offsets, job.phases, strict=True)
    ]
    outcome: list[dict[str, Any]] = [{} for _ in producers]
    buckets: list[list[Producer]] = [[] for _ in range(BUCKETS)]
    while not go.is_set():
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    t_start = time.time()

    async def attempt(i: int) -> None:
        p = producers[i]
        await asyncio.sleep(max(0.0, t_start + job.attempts[i] - time.time()))
        info = outcome[i]
        info["at"] = time.time()
        try:
            transport, proto = await loop.create_connection(
                lambda: HeadClient(p.on_text, key), "127.0.0.1", job.port
            )
            nonce = base64.b64encode(os.urandom(16)).decode()
            transport.write(
                (
                    f"GET {p.path} HTTP/1.1\r\nHost: 127.0.0.1:{job.port}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            try:
                await asyncio.wait_for(asyncio.shield(proto.upgraded), 30)
                await asyncio.wait_for(p.ready, 30)
            except BaseException:
                transport.close()
                head = proto.head.decode(errors="replace").lower()
                info["status"] = int(head.split(" ")[1]) if head.startswith("http/") else 0
                info["retry_after"] = "\r\nretry-after:" in head
                with contextlib.suppress(Exception):
                    info["code"] = json.loads(proto.body)["error"]["code"]
                return
        except OSError as exc:
            info["status"], info["error"] = 0, repr(exc)
            return
        p.ws = proto
        info["admitted"] = True
        buckets[i % BUCKETS].append(p)

    tasks = [asyncio.create_task(attempt(i)) for i in range(len(producers))]
    start = loop.time() + 0.02
    j = 0
    while True:
        due = start + j * TICK_S
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
        elif j % BUCKETS == 0:
            await asyncio.sleep(0)
        for p in buckets[j % BUCKETS]:
            if p.ws is not None and not p.ws.closed.done():
                p.send(frames)
        j += 1
        if j % 50 == 0 and stop.is_set():
            break
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    deadline = time.monotonic() + 3
    live = [p for p in producers if p.ws is not None]
    while time.monotonic() < deadline and any(len(p.pongs) < len(p.ping_ts) for p in live):
        await asyncio.sleep(0.05)
    for p, info in zip(producers, outcome, strict=True):
        info["dropped"] = p.ws is not None and p.ws.closed.done()
        info["ping_ts"], info["pongs"] = p.ping_ts, p.pongs
        info["finals"], info["errors"] = len(p.finals), p.errors[:3]
    await asyncio.gather(*(p.ws.close() for p in live if p.ws is not None), return_exceptions=True)
    return {"index": job.index, "producers": outcome}


async def _watch_gate(port: int, timeline: list[str]) -> None:
    """Every 2 s, the node's admission signals from its ``/metrics``."""
    import httpx

    want = (
        "mcustt_producers ",
        "mcustt_event_loop_lag_seconds ",
        "mcustt_event_loop_busy_ratio ",
        "mcustt_recognizer_load ",
    )
    async with httpx.AsyncClient(timeout=5) as hc:
        while True:
            await asyncio.sleep(2.0)
            try:
                r = await hc.get(
                    f"http://127.0.0.1:{port}/metrics",
                    headers={"authorization": f"Bearer {bl.ADMIN}"},
                )
            except httpx.HTTPError:
                timeline.append("(no answer)")
                continue
            got = {
                line.split(" ")[0]: float(line.split(" ")[1])
                for line in r.text.splitlines()
                if line.startswith(want)
            }
            timeline.append(
                f"{got.get('mcustt_producers', 0):.0f}/"
                f"{got.get('mcustt_event_loop_lag_seconds', 0) * 1000:.0f}/"
                f"{got.get('mcustt_event_loop_busy_ratio', 0):.2f}"
                + (
                    f"/{got['mcustt_recognizer_load']:.2f}"
                    if "mcustt_recognizer_load" in got
                    else ""
                )
            )


async def run_overload(env: Env) -> int:
    """``--overload``: one mcustt node with admission control, producers added every
    ``--step-s`` (``--step`` at a time) until ``--streams`` were tried, well past what
    the node admits; then ``--seconds`` of streaming. Prints admitted / refused, the
    lag of the admitted sessions, and whether anything crashed."""
    args = env.args
    sphinx = args.recognizer == "sphinx"
    n = int(args.streams or ("24" if sphinx else "800"))
    step = args.step or (1 if sphinx else 25)
    port = bl.free_port()
    log_path = env.tmp / f"overload-{port}.log"
    server_env = {
        "MCUSTT_DATABASE_URL": env.database_url,
        "MCUSTT_RECOGNIZER": args.recognizer,
        "MCUSTT_RECOGNIZER_WORKERS": str(args.workers),
        "MCUSTT_MAX_LOOP_LAG_MS": str(args.overload_lag_ms),
        "MCUSTT_MAX_RECOGNIZER_LOAD": str(args.overload_load),
        "MCUSTT_MAX_LOOP_BUSY": str(args.overload_busy),
    }
    server_env.update(kv.split("=", 1) for kv in args.server_env)
    proc = bl.spawn_mcustt(server_env, port, log_path)
    clients: list[Any] = []
    try:
        await bl.wait_http(port, proc, log_path)
        _, sessions = await bl.provision(f"http://127.0.0.1:{port}", n, name="overload")
        paths = [f"/ws/stt?token={s['ingestToken']}" for s in sessions]
        rng = random.Random(n)
        offsets = [rng.randrange(env.pcm_frames) for _ in range(n)]
        attempts = [(i // step) * args.step_s for i in range(n)]
        k = max(1, min(args.client_procs, n))
        result_q = env.ctx.Queue()
        go, stop = env.ctx.Event(), env.ctx.Event()
        for ci in range(k):
            idx = list(range(ci, n, k))
            job = OverloadJob(
                ci,
                port,
                [paths[i] for i in idx],
                [offsets[i] for i in idx],
                [i % PING_EVERY for i in idx],
                [attempts[i] for i in idx],
            )
            p = env.ctx.Process(
                target=overload_client_main, args=(job, go, stop, result_q), daemon=True
            )
            p.start()
            clients.append(p)
        await asyncio.sleep(1.0)
        print(
            f"  overload: {n} producers, {step} every {args.step_s:.1f} s, thresholds: loop lag "
            f"{args.overload_lag_ms:.0f} ms, loop busy {args.overload_busy}, recognizer load "
            f"{args.overload_load}",
            flush=True,
        )
        go.set()
        ramp = attempts[-1] + 2.0
        timeline: list[str] = []
        watcher = asyncio.create_task(_watch_gate(port, timeline))
        try:
            await asyncio.sleep(ramp + args.seconds)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        stop.set()
        results = [await asyncio.to_thread(result_q.get, True, 120) for _ in range(k)]
        alive = proc.poll() is None
        import httpx

        async with httpx.AsyncClient(timeout=10) as hc:
            r = await hc.get(
                f"http://127.0.0.1:{port}/metrics",
                headers={"authorization": f"Bearer {bl.ADMIN}"},
            )
            refused_metric = [
                line
                for line in r.text.splitlines()
                if line.startswith("mcustt_admissions_refused_total{")
            ]
    finally:
        for p in clients:
            p.join(10)
            if p.is_alive():
                p.kill()
        bl.stop_proc(proc)
    outcomes = [o for r in results if "fatal" not in r for o in r["producers"]]
    fatal = [r["fatal"] for r in results if "fatal" in r]
    admitted = [o for o in outcomes if o.get("admitted")]
    refused = [o for o in outcomes if not o.get("admitted") and o.get("status") == 503]
    clean = [o for o in refused if o.get("retry_after") and o.get("code") == "NODE_OVERLOADED"]
    other = [o for o in outcomes if not o.get("admitted") and o.get("status") != 503]
    last_admit = max((o["at"] for o in admitted), default=0.0)
    # The steady window: from 2 s after the last admission to the end.
    w0 = (last_admit + 2.0) * 1000
    lags: list[float] = []
    lost = 0
    for o in admitted:
        got = dict((ts, lag) for ts, lag in o["pongs"])
        for ts in o["ping_ts"]:
            if ts >= w0:
                if ts in got:
                    lags.append(got[ts])
                else:
                    lost += 1
    dropped = sum(1 for o in admitted if o["dropped"])
    errors = [e for o in admitted for e in o["errors"]]
    finals = sorted(o["finals"] for o in admitted)
    crashes = int(not alive) + len(fatal)
    print()
    print(f"overload ({args.recognizer}, {args.workers or os.cpu_count()} workers):")
    print(
        f"  tried {len(outcomes)}, admitted {len(admitted)}, refused {len(refused)} "
        f"({len(clean)} clean 503 NODE_OVERLOADED + Retry-After), other failures {len(other)}"
    )
    print(f"  server metric: {'; '.join(refused_metric) or '-'}")
    print(
        f"  admitted sessions after the ramp ({len(lags)} pongs): lag p50 "
        f"{bl.fmt(bl.percentile(lags, 50))} ms, p99 {bl.fmt(bl.percentile(lags, 99))} ms "
        f"(target < {args.lag_bound:.0f} ms: "
        f"{'MET' if bl.percentile(lags, 99) < args.lag_bound else 'MISSED'}), "
        f"max {bl.fmt(max(lags) if lags else math.nan)} ms, lost pongs {lost}"
    )
    if sphinx and finals:
        print(f"  finals per admitted producer: min {finals[0]}, median {finals[len(finals) // 2]}")
    print(f"  admitted producers dropped: {dropped}; error frames: {errors[:3] or 'none'}")
    print(f"  crashes: {crashes} (server alive: {alive}; client failures: {fatal[:2] or 'none'})")
    if other:
        print(f"  other failures, first: {other[:2]}")
    unclean = [o for o in refused if o not in clean]
    if unclean:
        print(f"  unclean refusals, first: {unclean[:2]}")
    print(
        "  node's admission signals, every 2 s (producers / loop lag p90 ms / loop busy"
        " / recognizer load, if it reports one):"
    )
    for i in range(0, len(timeline), 6):
        print("    " + "  ".join(timeline[i : i + 6]))
    ok = crashes == 0 and dropped == 0 and len(clean) == len(refused) and not other
    return 0 if ok else 1


# --------------------------------------------------------------------------- driver


def print_levels(levels: list[Level], sphinx: bool) -> None:
    headers = [
        "server",
        "N",
        "conn",
        "lag p50",
        "lag p99",
        "lag max",
        "lost",
        "%core/str",
        "us/frame",
        "RSS KB/sess",
    ]
    if sphinx:
        headers += ["wrk us/fr", "wrk RSS MB", "final p50", "final p99", "speech p50", "finals"]
    headers += ["cli late p99", "cli %cpu", "load", "steal%", "pass"]
    rows = []
    for lv in levels:
        row = [
            lv.server,
            str(lv.streams),
            str(lv.connected),
            bl.fmt(lv.lag_p50),
            bl.fmt(lv.lag_p99),
            bl.fmt(lv.lag_max),
            f"{lv.lost}/{lv.pings}",
            bl.fmt(lv.cpu_pct_per_stream, 3),
            bl.fmt(lv.us_per_frame),
            bl.fmt(lv.rss_kb_per_session),
        ]
        if sphinx:
            row += [
                bl.fmt(lv.worker_us_per_frame),
                bl.fmt(lv.worker_rss_mb, 0),
                bl.fmt(lv.final_p50, 0),
                bl.fmt(lv.final_p99, 0),
                bl.fmt(lv.speech_p50, 0),
                f"{lv.finals}/{lv.utterances}" if lv.server == "mcustt" else "-",
            ]
        row += [
            bl.fmt(lv.client_late_p99),
            bl.fmt(lv.client_cpu_pct, 0),
            bl.fmt(lv.load, 2),
            bl.fmt(lv.steal),
            "yes" if lv.passed else "NO",
        ]
        rows.append(row)
    print(bl.table(headers, rows), flush=True)
    for lv in levels:
        if lv.errors or lv.dropped:
            print(f"  {lv.server} N={lv.streams}: dropped={lv.dropped} errors={lv.errors[:3]}")


async def search(
    env: Env, server: str, start: int, resolution: int
) -> tuple[int, int | None, list[Level]]:
    """Largest passing N in at most --max-steps levels: grow x1.5, then bisect. A level
    that fails is measured once more and the quieter run counts (the machine is shared:
    one busy second of someone else's tests must not decide the result)."""
    good, bad = 0, None
    n = start
    levels: list[Level] = []
    sphinx = env.args.recognizer == "sphinx" and server == "mcustt"
    for _ in range(env.args.max_steps):
        level = await run_level(env, server, n)
        print_levels([level], sphinx)
        if not level.passed:
            again = await run_level(env, server, n)
            print_levels([again], sphinx)
            if again.passed or again.lag_p99 < level.lag_p99:
                level = again
        levels.append(level)
        if level.passed:
            good = max(good, n)
        else:
            bad = n if bad is None else min(bad, n)
        if bad is None:
            n = max(n + resolution, int(n * 1.5))
        else:
            if bad - good <= max(resolution, good // 20):
                break
            n = (good + bad) // 2
            if good == 0 and bad <= resolution:
                break
    return good, bad, levels


async def main_async(args: argparse.Namespace) -> int:
    bl.raise_nofile()
    sphinx = args.recognizer == "sphinx"
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    pg_name = None
    if args.db == "postgres":
        pg_name = "bench_" + uuid.uuid4().hex[:10]
        database_url = bl.create_pg_database(args.pg_url, pg_name)
    else:
        database_url = bl.migrate_sqlite(tmp / "bench.db")
    env = Env(args, tmp, database_url, len(audio_loop()), mp.get_context("spawn"))
    print(
        f"# bench_ingest: recognizer={args.recognizer} workers={args.workers or os.cpu_count()} "
        f"db={args.db} broker={'redis' if args.redis else 'memory'} seconds={args.seconds} "
        f"warmup={args.warmup} client_procs={args.client_procs} cores={os.cpu_count()} "
        f"nofile={bl.raise_nofile()} load={bl.loadavg():.2f}",
        flush=True,
    )
    collected: list[Level] = []
    try:
        if args.overload:
            return await run_overload(env)
        if args.search:
            start = (
                next(int(x) for x in args.streams.split(","))
                if args.streams
                else (4 if sphinx else 100)
            )
            resolution = 1 if sphinx else 10
            found: dict[str, tuple[int, int | None]] = {}
            servers = args.servers
            for server in servers:
                s_start = start if not (sphinx and server != "mcustt") else 100
                good, bad, levels = await search(
                    env, server, s_start, resolution if server == "mcustt" else 10
                )
                found[server] = (good, bad)
                collected += levels
            print()
            print_levels(collected, sphinx)
            print()
            print(
                f"max streams at p99 < {args.lag_bound:.0f} ms (search, {args.seconds:.0f} s windows):"
            )
            for server in servers:
                good, bad = found[server]
                print(
                    f"  {server:7s} {good:5d}   (first failing N: {bad if bad is not None else '-'})"
                )
            m = found.get("mcustt", (0, None))[0]
            if sphinx and "mcustt" in found:
                verdict = "MET" if m >= 6 else "MISSED"
                print(
                    f"  real-time sphinx streams sustained = {m} (target >= 6 with final p50 < 500 ms: {verdict})"
                )
            for base in ("echo", "sink"):
                if sphinx or "mcustt" not in found or base not in found:
                    continue
                b = found[base][0]
                ratio = m / b if b else math.nan
                target = " (target >= 0.60: " + ("MET)" if ratio >= 0.6 else "MISSED)")
                print(f"  ratio mcustt/{base} = {ratio:.2f}{target if base == 'echo' else ''}")
        else:
            ns = [int(x) for x in (args.streams or ("4,6,8" if sphinx else "100,200")).split(",")]
            levels = collected
            for n in ns:
                for server in args.servers:
                    level = await run_level(env, server, n)
                    levels.append(level)
                    print_levels([level], sphinx and server == "mcustt")
            print()
            print_levels(levels, sphinx)
            for base in ("echo", "sink"):
                if "mcustt" not in args.servers or base not in args.servers:
                    continue
                print()
                print(f"mcustt vs bare {base} at the same N:")
                for n in ns:
                    e = next(lv for lv in levels if lv.server == base and lv.streams == n)
                    m = next(lv for lv in levels if lv.server == "mcustt" and lv.streams == n)
                    extra = ""
                    if sphinx:
                        extra = (
                            f", final p50/p99 {bl.fmt(m.final_p50, 0)}/{bl.fmt(m.final_p99, 0)} ms "
                            f"from VAD end ({bl.fmt(m.speech_p50, 0)} ms from speech end)"
                        )
                    print(
                        f"  N={n}: server CPU per frame x{m.us_per_frame / e.us_per_frame:.2f} "
                        f"({bl.fmt(m.us_per_frame)} vs {bl.fmt(e.us_per_frame)} us), lag p99 "
                        f"{bl.fmt(m.lag_p99)} vs {bl.fmt(e.lag_p99)} ms, "
                        f"{'pass' if m.passed else 'FAIL'}/{'pass' if e.passed else 'FAIL'}{extra}"
                    )
            if sphinx:
                ok = [lv.streams for lv in levels if lv.server == "mcustt" and lv.passed]
                print(f"  sphinx streams sustained (largest passing N run): {max(ok) if ok else 0}")
        if args.json:
            Path(args.json).write_text(json.dumps([lv.__dict__ for lv in collected], indent=1))
    finally:
        if pg_name:
            bl.drop_pg_database(args.pg_url, pg_name)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", default="", help="N list, e.g. 50,100,200 (search: the start)")
    parser.add_argument("--seconds", type=float, default=15.0, help="steady window per level")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds streamed before the window"
    )
    parser.add_argument("--recognizer", choices=["null", "sphinx"], default="null")
    parser.add_argument(
        "--workers", type=int, default=0, help="sphinx worker processes (0: one a core)"
    )
    parser.add_argument("--search", action="store_true", help="find the max N at the lag bound")
    parser.add_argument(
        "--overload",
        action="store_true",
        help="add producers past the node's capacity (admission control, issue 13): "
        "--streams is how many to try in all",
    )
    parser.add_argument("--step", type=int, default=0, help="overload: producers per step")
    parser.add_argument("--step-s", type=float, default=2.0, help="overload: seconds per step")
    parser.add_argument(
        "--overload-lag-ms", type=float, default=100.0, help="overload: MCUSTT_MAX_LOOP_LAG_MS"
    )
    parser.add_argument(
        "--overload-load", type=float, default=0.9, help="overload: MCUSTT_MAX_RECOGNIZER_LOAD"
    )
    parser.add_argument(
        "--overload-busy", type=float, default=0.65, help="overload: MCUSTT_MAX_LOOP_BUSY"
    )
    parser.add_argument("--max-steps", type=int, default=7, help="runs per server in --search")
    parser.add_argument("--lag-bound", type=float, default=50.0, help="ms, p99")
    parser.add_argument("--final-bound", type=float, default=500.0, help="ms, sphinx final p50")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument(
        "--servers",
        default="",
        help="comma list of mcustt, echo (each frame sent back: the baseline the target "
        "names) and sink (frames discarded: a stricter floor); default echo,mcustt "
        "(sphinx: mcustt)",
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", action="store_true", help="run mcustt on the Redis broker")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", default="", help="also write the levels here")
    parser.add_argument(
        "--server-env", action="append", default=[], help="KEY=VALUE for the mcustt server"
    )
    parser.add_argument("--py-spy", default="", help="profile mcustt levels to PREFIX-*.txt")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    args = parser.parse_args()
    default = "mcustt" if args.recognizer == "sphinx" else "echo,mcustt"
    args.servers = [x for x in (args.servers or default).split(",") if x]
    if not set(args.servers) <= {"mcustt", "echo", "sink"}:
        parser.error("--servers: choose from mcustt, echo, sink")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main_async(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
