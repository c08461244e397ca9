"""Caption latency seen by a viewer: end of speech → final, speech → first interim (issue 17).

Usage (from the repo root)::

    .venv/bin/python scripts/bench_latency.py                      # 1, 6 and 10 streams, 60 s
    .venv/bin/python scripts/bench_latency.py --streams 6 --seconds 120
    .venv/bin/python scripts/bench_latency.py --server-env MCUSTT_ENDPOINT_FAST_AFTER_MS=999999

What runs:

* ``python -m mcustt serve`` started here (``MCUSTT_RECOGNIZER=sphinx``, a fresh SQLite
  file, every other setting at its default), one server for all levels;
* per stream, a session; a producer on ``/ws/stt`` sending 20 ms PCM16 frames at
  real-time pace (each frame's send time recorded), playing the English fixtures
  ``hello_en``, ``pause_en``, ``standup_en`` (10 turns in 58 s) in a loop, starting at a
  random fixture after a random 0-5 s delay so the streams' finals do not align; and a
  viewer on ``/ws/subscribe`` on ANOTHER connection, timing each event's arrival.

Figures, per turn of the fixtures (their JSON gives the turns; the times inside a turn
come from the waveform, because a turn's ``end_s`` includes espeak's trailing digital
silence):

* **speech start / last speech sample**: the first / last 10 ms window of the turn whose
  RMS is above 100 (-50 dBFS); "sent" is the wall time the 20 ms frame holding that
  sample was written to the producer's socket;
* **end of speech → final**: from the last speech sample sent to the arrival, on the
  viewer, of the first final that covers it (its ``endMs`` reaches the turn's end);
  a turn whose final does not come within 5 s counts as missed;
* **speech start → first interim**: to the viewer's first transcript event of the turn;
* **interim interval**: between consecutive interims on the viewer while the turn is
  spoken (after its first interim, before its last speech sample was sent), leaving out
  the gaps that span a pause of the turn (a silent run >= 200 ms, as seen by the
  waveform, plus 300 ms for decoding to catch up);
* **finals/turn** (> 1: turns cut in several finals) and the median words per final;
* turns that start in a stream's first ``--warmup`` seconds (10) are not counted: a
  sphinx worker builds a decoder for each utterance it holds at once beyond those it
  has (0.6-2 s each, decoding nothing else meanwhile), which a running node did long ago;
* server CPU: the server process and its sphinx workers, % of one core, over the
  measured window;
* the server's own ``mcustt_caption_*`` histograms from ``/metrics`` (interpolated
  quantiles of their buckets over the level), when the server has them.

Targets (issue 17): end of speech → final p50 <= 250 ms and p95 <= 400 ms at 6 streams;
first interim <= 300 ms; interims every <= 200 ms during speech.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl

FIXTURES = bl.ROOT / "tests" / "fixtures"
PLAYLIST = ("hello_en", "pause_en", "standup_en")
FRAME_BYTES = 640
FRAME_S = 0.02
WINDOW = 160  # samples: 10 ms
RMS_SPEECH = 100.0  # -50 dBFS
PAUSE_MS = 200
CATCH_UP_MS = 300
MISSED_AFTER_S = 5.0


# --------------------------------------------------------------------------- the audio


@dataclass
class Turn:
    onset_ms: int  # first speech sample, from the start of its fixture
    end_ms: int  # just after the last speech sample
    pauses: list[tuple[int, int]]  # silent runs >= PAUSE_MS inside the turn
    words: int


@dataclass
class Fixture:
    name: str
    frames: list[bytes]
    turns: list[Turn]


def load_fixture(name: str) -> Fixture:
    with wave.open(str(FIXTURES / f"{name}.wav"), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        pcm = w.readframes(w.getnframes())
    pcm += b"\x00" * (-len(pcm) % FRAME_BYTES)
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    samples = array.array("h", pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    turns: list[Turn] = []
    for t in meta["turns"]:
        lo, hi = int(t["start_s"] * 16000), int(t["end_s"] * 16000)
        active: list[bool] = []
        for i in range(lo, hi, WINDOW):
            win = samples[i : i + WINDOW]
            rms = math.sqrt(sum(x * x for x in win) / len(win)) if win else 0.0
            active.append(rms > RMS_SPEECH)
        voiced = [k for k, a in enumerate(active) if a]
        if not voiced:
            continue
        first, last = voiced[0], voiced[-1]
        pauses: list[tuple[int, int]] = []
        k = first
        while k <= last:
            if active[k]:
                k += 1
                continue
            j = k
            while j <= last and not active[j]:
                j += 1
            if (j - k) * 10 >= PAUSE_MS:
                pauses.append((lo // 16 + k * 10, lo // 16 + j * 10))
            k = j
        turns.append(
            Turn(
                onset_ms=lo // 16 + first * 10,
                end_ms=lo // 16 + (last + 1) * 10,
                pauses=pauses,
                words=len(str(t["text"]).split()),
            )
        )
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    return Fixture(name, frames, turns)


# --------------------------------------------------------------------------- one stream


@dataclass
class Stream:
    session: dict[str, Any]
    order: list[Fixture]
    delay_s: float
    warmup_s: float = 0.0
    sent: list[float] = field(default_factory=list)  # monotonic send time of each frame
    turns: list[Turn] = field(default_factory=list)  # in session time (ms)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def on_viewer(self, payload: bytes) -> None:
        now = time.monotonic()
        with contextlib.suppress(ValueError):
            msg = json.loads(payload)
            if isinstance(msg, dict) and msg.get("type") == "transcript":
                self.events.append((now, msg))
            elif isinstance(msg, dict) and msg.get("type") == "error":
                self.errors.append(f"viewer: {msg.get('code')}")

    def on_producer(self, payload: bytes) -> None:
        with contextlib.suppress(ValueError):
            msg = json.loads(payload)
            if isinstance(msg, dict) and msg.get("type") == "error":
                self.errors.append(f"producer: {msg.get('code')}: {msg.get('message')}")


async def run_stream(port: int, stream: Stream, stop_at: float) -> None:
    key = os.urandom(4)
    viewer = await bl.ws_connect(
        port, f"/ws/subscribe?token={stream.session['subscribeToken']}", stream.on_viewer, key
    )
    await asyncio.sleep(stream.delay_s)
    try:
        producer = await bl.ws_connect(
            port, f"/ws/stt?token={stream.session['ingestToken']}", stream.on_producer, key
        )
    except ConnectionError as exc:
        # e.g. 503 NODE_OVERLOADED: the node's admission control refused the producer
        stream.errors.append(f"producer refused: {exc}")
        await viewer.close()
        return
    try:
        k = 0
        offset_ms = 0
        start = time.monotonic() + 0.05
        while True:
            for fx in stream.order:
                if time.monotonic() >= stop_at:
                    return
                for t in fx.turns:
                    stream.turns.append(
                        Turn(
                            t.onset_ms + offset_ms,
                            t.end_ms + offset_ms,
                            [(a + offset_ms, b + offset_ms) for a, b in t.pauses],
                            t.words,
                        )
                    )
                for frame in fx.frames:
                    due = start + k * FRAME_S
                    now = time.monotonic()
                    if due > now:
                        await asyncio.sleep(due - now)
                    producer.write(bl.client_frame(2, frame, key))
                    stream.sent.append(time.monotonic())
                    k += 1
                offset_ms += len(fx.frames) * 20
    finally:
        # A little silence flushes nothing the VAD has not ended; then hang up.
        await asyncio.sleep(MISSED_AFTER_S)
        await producer.close()
        await asyncio.sleep(0.5)
        await viewer.close()


# --------------------------------------------------------------------------- figures


@dataclass
class Figures:
    end_to_final: list[float] = field(default_factory=list)
    first_interim: list[float] = field(default_factory=list)
    interval: list[float] = field(default_factory=list)
    finals_per_turn: list[int] = field(default_factory=list)
    words_per_final: list[int] = field(default_factory=list)
    turns: int = 0
    missed: int = 0
    errors: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)


def frame_time(stream: Stream, sample: int) -> float | None:
    """Monotonic send time of the frame holding ``sample`` (session time, 16 kHz)."""
    k = sample // (FRAME_BYTES // 2)
    return stream.sent[k] if 0 <= k < len(stream.sent) else None


def measure(stream: Stream, fig: Figures) -> None:
    fig.errors += stream.errors
    finals = [(t, m) for t, m in stream.events if m.get("isFinal")]
    interims = [(t, m) for t, m in stream.events if not m.get("isFinal")]
    for f in finals:
        fig.words_per_final.append(len(str(f[1].get("text", "")).split()))
    for turn in stream.turns:
        sent_end = frame_time(stream, turn.end_ms * 16 - 1)  # its last speech sample
        sent_onset = frame_time(stream, turn.onset_ms * 16)
        if sent_end is None or sent_onset is None:
            continue  # not played in full
        if stream.sent[-1] - sent_end < 1.0:
            continue  # the stream stopped right after: its end is not a pause
        if sent_onset - stream.sent[0] < stream.warmup_s:
            continue  # warm-up: the workers build their decoders (0.6-2 s each)
        fig.turns += 1
        covering = [
            t
            for t, m in finals
            if t >= sent_end and int(m.get("endMs", turn.end_ms)) >= turn.end_ms - 100
        ]
        if covering and covering[0] - sent_end <= MISSED_AFTER_S:
            fig.end_to_final.append((covering[0] - sent_end) * 1000)
        else:
            fig.missed += 1
        after = [(t, m) for t, m in finals if t >= sent_end]
        fig.detail.append(
            f"{stream.session['sessionId']} turn {turn.onset_ms}-{turn.end_ms} ms: "
            f"final +{(covering[0] - sent_end) * 1000 if covering else math.nan:.0f} ms"
            + (
                f" (next final: +{(after[0][0] - sent_end) * 1000:.0f} ms, "
                f"{after[0][1].get('startMs')}-{after[0][1].get('endMs')} ms)"
                if after and not covering
                else ""
            )
        )
        mine = [
            (t, m)
            for t, m in finals
            if int(m.get("endMs", -1)) > turn.onset_ms and int(m.get("startMs", 0)) < turn.end_ms
        ]
        if mine and "endMs" in mine[0][1]:
            fig.finals_per_turn.append(len(mine))
        firsts = [t for t, _ in stream.events if t >= sent_onset]
        if firsts and firsts[0] < sent_end + 1.0:
            fig.first_interim.append((firsts[0] - sent_onset) * 1000)
            fig.detail[-1] += f", first event +{(firsts[0] - sent_onset) * 1000:.0f} ms"
        during = [t for t, _ in interims if firsts and firsts[0] <= t <= sent_end]
        pauses: list[tuple[float, float]] = []
        for pause_start, pause_end in turn.pauses:
            pa = frame_time(stream, pause_start * 16)
            pb = frame_time(stream, pause_end * 16)
            if pa is not None and pb is not None:
                pauses.append((pa, pb + CATCH_UP_MS / 1000))
        for t1, t2 in itertools.pairwise(during):
            if any(t1 < pe and t2 > ps for ps, pe in pauses):
                continue
            fig.interval.append((t2 - t1) * 1000)


# --------------------------------------------------------------------------- /metrics

METRICS = {
    "final": "mcustt_caption_final_seconds",
    "delivery": "mcustt_caption_delivery_seconds",
    "first_interim": "mcustt_caption_first_interim_seconds",
    "interval": "mcustt_caption_interim_interval_seconds",
}
_BUCKET = re.compile(r'^(\w+)_bucket\{(.*?)le="([^"]+)"(.*?)\}\s+([0-9.eE+-]+)$')


async def scrape(port: int) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts of the caption histograms, summed over their labels."""
    import httpx

    out: dict[str, dict[float, float]] = {}
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(
                f"http://127.0.0.1:{port}/metrics",
                headers={"authorization": f"Bearer {bl.ADMIN}"},
            )
    except httpx.HTTPError:
        return out
    if r.status_code != 200:
        return out
    for line in r.text.splitlines():
        m = _BUCKET.match(line)
        if not m or m.group(1) not in METRICS.values():
            continue
        le = math.inf if m.group(3) == "+Inf" else float(m.group(3))
        hist = out.setdefault(m.group(1), {})
        hist[le] = hist.get(le, 0.0) + float(m.group(5))
    return out


def hist_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Prometheus-style histogram_quantile over the level's bucket deltas (ms)."""
    les = sorted(after)
    counts = [after[le] - before.get(le, 0.0) for le in les]
    if not counts or counts[-1] <= 0:
        return math.nan
    rank = q * counts[-1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in zip(les, counts, strict=True):
        if c >= rank:
            if math.isinf(le):
                return prev_le * 1000
            return (prev_le + (le - prev_le) * (rank - prev_c) / ((c - prev_c) or 1)) * 1000
        prev_le, prev_c = le, c
    return math.nan


# --------------------------------------------------------------------------- a level


async def wait_ready(port: int) -> None:
    """Until ``/readyz`` says 200 (the sphinx workers are up), at most 60 s."""
    import httpx

    async with httpx.AsyncClient(timeout=5) as c:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not get ready")


async def run_level(
    port: int,
    pid: int,
    n: int,
    seconds: float,
    warmup: float,
    fixtures: list[Fixture],
    rng: random.Random,
) -> tuple[Figures, dict[str, tuple[float, float]], float, float]:
    _, sessions = await bl.provision(f"http://127.0.0.1:{port}", n, name=f"latency-{n}")
    streams = []
    for s in sessions:
        first = rng.randrange(len(fixtures))
        order = fixtures[first:] + fixtures[:first]
        streams.append(Stream(s, order, rng.uniform(0.0, 5.0), warmup))
    load0 = bl.loadavg()
    stop_at = time.monotonic() + 5.0 + warmup + seconds
    tasks = [asyncio.create_task(run_stream(port, st, stop_at)) for st in streams]
    await asyncio.sleep(5.0 + warmup)
    before = await scrape(port)
    procs = [pid, *bl.descendants(pid)]
    cpu0, t0 = sum(bl.cpu_seconds(p) for p in procs), time.monotonic()
    await asyncio.gather(*tasks)
    cpu = (sum(bl.cpu_seconds(p) for p in procs) - cpu0) / (time.monotonic() - t0) * 100
    after = await scrape(port)
    fig = Figures()
    for st in streams:
        measure(st, fig)
    server: dict[str, tuple[float, float]] = {}
    for key, name in METRICS.items():
        if name in after:
            b, a = before.get(name, {}), after[name]
            server[key] = (hist_quantile(b, a, 0.5), hist_quantile(b, a, 0.95))
    return fig, server, max(load0, bl.loadavg()), cpu


def pct(values: list[float], q: float) -> str:
    return bl.fmt(bl.percentile(values, q), 0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--streams", default="1,6,10", help="comma-separated levels")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured audio a stream")
    parser.add_argument(
        "--warmup", type=float, default=10.0, help="seconds a stream plays before turns count"
    )
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every turn")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="K=V", help="extra server setting"
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.streams.split(",") if x]
    rng = random.Random(args.seed)
    fixtures = [load_fixture(n) for n in PLAYLIST]
    bl.raise_nofile()

    tmp = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    url = bl.migrate_sqlite(tmp / "latency.db")
    port = bl.free_port()
    log_path = tmp / "server.log"
    env = {"MCUSTT_DATABASE_URL": url, "MCUSTT_RECOGNIZER": "sphinx"}
    env.update(kv.split("=", 1) for kv in args.server_env)
    proc = bl.spawn_mcustt(env, port, log_path)
    rows: list[list[str]] = []
    server_rows: list[list[str]] = []
    try:
        await bl.wait_http(port, proc, log_path)
        await wait_ready(port)
        print(
            f"server: mcustt serve, sphinx ({os.cpu_count()} cores), SQLite; "
            f"{' '.join(args.server_env) or 'default settings'}; {args.seconds:.0f} s a stream",
            flush=True,
        )
        for n in levels:
            print(f"  {n} stream(s)...", flush=True)
            fig, server, load, cpu = await run_level(
                port, proc.pid, n, args.seconds, args.warmup, fixtures, rng
            )
            under = [x for x in fig.interval if x <= 200]
            rows.append(
                [
                    str(n),
                    f"{fig.turns}",
                    f"{fig.missed}",
                    pct(fig.end_to_final, 50),
                    pct(fig.end_to_final, 95),
                    bl.fmt(max(fig.end_to_final), 0) if fig.end_to_final else "-",
                    pct(fig.first_interim, 50),
                    pct(fig.first_interim, 95),
                    pct(fig.interval, 50),
                    pct(fig.interval, 95),
                    f"{100 * len(under) / len(fig.interval):.0f}" if fig.interval else "-",
                    f"{statistics.mean(fig.finals_per_turn):.2f}" if fig.finals_per_turn else "-",
                    f"{statistics.median(fig.words_per_final):.1f}" if fig.words_per_final else "-",
                    f"{cpu:.0f}",
                    f"{load:.1f}",
                ]
            )
            srow = [str(n)]
            for key in METRICS:
                p50, p95 = server.get(key, (math.nan, math.nan))
                srow += [bl.fmt(p50, 0), bl.fmt(p95, 0)]
            server_rows.append(srow)
            if args.verbose:
                print("\n".join("    " + d for d in fig.detail), flush=True)
            print("    " + " | ".join(rows[-1]), flush=True)
            if fig.errors:
                print(f"    errors: {sorted(set(fig.errors))[:5]}", flush=True)
    finally:
        bl.stop_proc(proc)
    print()
    print(
        "speech start / last speech sample: first / last 10 ms window of a fixture turn "
        f"with RMS > {RMS_SPEECH:.0f} (-50 dBFS); times from the send of the 20 ms frame "
        "holding it to the arrival on a viewer (another connection). ms."
    )
    print(
        bl.table(
            [
                "streams",
                "turns",
                "missed",
                "end→final p50",
                "p95",
                "max",
                "start→1st interim p50",
                "p95",
                "interim interval p50",
                "p95",
                "% <=200",
                "finals/turn",
                "words/final",
                "server CPU %",
                "load",
            ],
            rows,
        )
    )
    if any(any(c != "-" for c in r[1:]) for r in server_rows):
        print()
        print("the server's own histograms (/metrics, mcustt_caption_*), p50 / p95 ms:")
        print(
            bl.table(
                [
                    "streams",
                    "final p50",
                    "p95",
                    "delivery p50",
                    "p95",
                    "1st interim p50",
                    "p95",
                    "interval p50",
                    "p95",
                ],
                server_rows,
            )
        )
    print("\ntargets at 6 streams: end→final p50 <= 250, p95 <= 400; first interim <= 300;")
    print("interims every <= 200 ms during speech")


if __name__ == "__main__":
    asyncio.run(main())
