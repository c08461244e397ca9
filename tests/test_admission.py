"""Admission control and the drain's refusals (issue 13), in one process.

The two-node scenarios are ``test_fault_drain.py`` and ``test_fault_overload.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
import websockets
from conftest import Running, make_settings, new_session, new_tenant, run_server
from websockets.exceptions import InvalidStatus

from mcustt.admission import Gate, NodeDraining, NodeOverloaded
from mcustt.config import Settings
from mcustt.drain import drain
from mcustt.metrics import Metrics
from mcustt.recognizers.base import Recognizer, RecognizerStream
from mcustt.state import AppState


class Loaded(Recognizer):
    """A recognizer reporting whatever load the test sets."""

    name = "loaded"

    def __init__(self) -> None:
        super().__init__(Settings())
        self.level: float | None = None

    def load(self) -> float | None:
        return self.level

    def open_stream(
        self,
        *,
        language: str,
        auto_detect: bool,
        language_hints: Sequence[str] = (),
        keywords: Sequence[str] = (),
    ) -> RecognizerStream:
        raise NotImplementedError


def refused(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("mcustt_admissions_refused_total", {"reason": reason})
    return value or 0.0


async def test_a_saturated_node_refuses_new_producers_with_retry_after() -> None:
    metrics, engine = Metrics(), Loaded()
    producers = [0]
    settings = Settings(max_producers_per_node=2, max_loop_lag_ms=0, max_recognizer_load=0.8)
    gate = Gate(settings, metrics, engine, lambda: producers[0])
    gate.admit_producer()  # idle: admitted
    producers[0] = 2
    with pytest.raises(NodeOverloaded) as info:
        gate.admit_producer()
    assert info.value.status_code == 503 and info.value.code == "NODE_OVERLOADED"
    assert int(info.value.headers["Retry-After"]) >= 1
    assert refused(metrics, "producer_cap") == 1
    producers[0] = 1
    engine.level = 0.95  # the engine is behind: refused once the monitor has seen it
    task = asyncio.create_task(gate.run())
    try:
        for _ in range(200):
            if gate.recognizer_load is not None:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(NodeOverloaded):
            gate.admit_producer()
        assert refused(metrics, "recognizer_load") == 1
        gate.admit_viewer()  # viewers are not refused for load
        gate.admit_session()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_lag_monitor_sees_a_blocked_event_loop() -> None:
    metrics = Metrics()
    gate = Gate(Settings(max_loop_lag_ms=100), metrics, Loaded(), lambda: 0)
    task = asyncio.create_task(gate.run())
    try:
        await asyncio.sleep(0.08)  # one sample, on time
        time.sleep(0.3)  # blocking the loop is the point
        await asyncio.sleep(0.08)  # the late sample is taken
        assert gate.loop_lag_s >= 0.2
        with pytest.raises(NodeOverloaded):
            gate.admit_producer()
        assert refused(metrics, "loop_lag") == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _spin(share: float, seconds: float) -> None:
    """Keep the event loop's thread on the CPU ``share`` of the time (busy-waiting, not
    sleeping: the busy signal counts CPU, not wall time)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        until = time.perf_counter() + 0.02 * share
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(0.02 * (1 - share))


@contextlib.asynccontextmanager
async def monitored(
    producers: int, cpu_clock: Callable[[], float] = time.thread_time
) -> AsyncIterator[tuple[Gate, Metrics]]:
    """A gate refusing above a 0.5 busy share (nothing else), its monitor running."""
    metrics = Metrics()
    settings = Settings(max_loop_lag_ms=0, max_loop_busy=0.5, max_recognizer_load=0)
    gate = Gate(settings, metrics, Loaded(), lambda: producers, cpu_clock=cpu_clock)
    task = asyncio.create_task(gate.run())
    try:
        yield gate, metrics
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_busy_share_is_the_loop_threads_cpu_time() -> None:
    """Sleeping is not busy, spinning is (by CPU time: a test machine's load lowers the
    figure a spinning loop gets, which is why the refusals below use a clock)."""
    async with monitored(producers=4) as (gate, _):
        await asyncio.sleep(1.2)
        idle = gate.loop_busy
        await _spin(0.9, 1.2)
        busy = gate.loop_busy
        assert idle < 0.1 and busy > max(0.15, 3 * idle), (idle, busy)


async def test_a_busy_event_loop_refuses_producers_before_it_lags() -> None:
    loop = asyncio.get_running_loop()
    share = [0.05]
    clock = {"cpu": 0.0, "at": loop.time()}

    def cpu_clock() -> float:  # CPU seconds at ``share`` of the wall time since the last read
        now = loop.time()
        clock["cpu"] += share[0] * (now - clock["at"])
        clock["at"] = now
        return clock["cpu"]

    async with monitored(producers=4, cpu_clock=cpu_clock) as (gate, metrics):
        await asyncio.sleep(1.2)  # nearly idle: admitted
        assert gate.loop_busy == pytest.approx(0.05, abs=0.01)
        gate.admit_producer()
        share[0] = 0.9  # on the CPU 90 % of the time, its timers still on time
        await asyncio.sleep(1.2)
        assert gate.loop_busy == pytest.approx(0.9, abs=0.01)
        with pytest.raises(NodeOverloaded) as info:
            gate.admit_producer()
        assert "loop busy" in info.value.message
        assert refused(metrics, "loop_busy") == 1
        assert (metrics.registry.get_sample_value("mcustt_event_loop_busy_ratio") or 0) > 0.5


async def test_a_burst_of_producers_is_admitted_up_to_the_limit_not_past_it() -> None:
    """Producers that connect at once count before the monitor sees them stream."""
    loop = asyncio.get_running_loop()
    # the loop's thread on the CPU 40 % of the time (a clock, so that a busy test
    # machine does not change the figure): 4 producers cost 0.4, each 0.1
    async with monitored(producers=4, cpu_clock=lambda: 0.4 * loop.time()) as (gate, metrics):
        await asyncio.sleep(1.2)
        assert gate.loop_busy == pytest.approx(0.4, abs=0.01)
        admitted = 0
        for _ in range(10):  # ten connect in the same instant
            try:
                gate.admit_producer()
            except NodeOverloaded:
                break
            gate.expect_producer()
            admitted += 1
        # 0.4 + n * 0.1 passes 0.5 at the second (the lag, the busy share itself, and a
        # gate without the projection would have admitted all ten)
        assert admitted == 1, admitted
        assert refused(metrics, "loop_busy") == 1


def _state(srv: Running) -> AppState:
    state: AppState = srv.app.state.mcustt
    return state


async def test_a_draining_node_says_so_and_refuses_new_work(sqlite_url: str) -> None:
    async with run_server(make_settings(sqlite_url, drain_grace_s=2)) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        async with srv.client() as c:
            assert (await c.get("/readyz")).json()["status"] == "ready"
        state = _state(srv)
        await drain(state, grace_s=2)
        assert state.metrics.registry.get_sample_value("mcustt_draining") == 1
        async with srv.client() as c:
            r = await c.get("/readyz")
            assert r.status_code == 503 and r.json()["status"] == "draining"
            r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": t["apiKey"]})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "NODE_DRAINING"
            assert int(r.headers["retry-after"]) >= 1
            # REST reads keep working
            r = await c.get(
                f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": t["apiKey"]}
            )
            assert r.status_code == 200 and r.json()["status"] == "live"
        for path in (
            f"/ws/stt?token={s['ingestToken']}",
            f"/ws/subscribe?token={s['subscribeToken']}",
        ):
            with pytest.raises(InvalidStatus) as info:
                async with websockets.connect(srv.ws_url + path):
                    pass
            assert info.value.response.status_code == 503
        assert refused(state.metrics, "draining") == 3
        with pytest.raises(NodeDraining):
            state.gate.admit_producer()
