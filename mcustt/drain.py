"""Graceful drain on SIGTERM (issue 13): hand everything over to the other nodes.

:class:`mcustt.server.Server` runs :func:`drain` when the process gets SIGTERM, before
uvicorn's own shutdown closes the sockets. Within ``MCUSTT_DRAIN_GRACE_S``:

1. the node stops admitting (:class:`mcustt.admission.Gate`): ``/readyz`` answers 503
   ``draining``, new sessions, producers and viewers get 503 ``NODE_DRAINING`` with
   ``Retry-After``;
2. every producer's pipeline is finalized at once: the utterance in flight becomes its
   final, persisted and published like any other; the producer then gets an ``error``
   frame ``NODE_DRAINING`` and close 1012 (its claim released, so another node takes
   it with a fresh ingest token at once). No session is ended;
3. once each session's last finals went round the broker back to this node's viewers
   (a marker published after them came back) and every viewer sent what it had, the
   viewers are closed with 1012 (SSE: an ``error`` event, then the end of the stream):
   they resume on another node with their last seq and miss nothing.

Whatever the grace period leaves undone, uvicorn's shutdown and the lifespan finish
(sockets closed 1012, pipelines finalized by :meth:`PipelineRegistry.aclose`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Final

import structlog

from mcustt.admission import NodeDraining
from mcustt.events import Event
from mcustt.fanout import Viewer
from mcustt.state import AppState
from mcustt.tokens import random_id
from mcustt.wire import ErrorCode

log = structlog.get_logger(__name__)

#: the reason viewers are kicked with (its code before the colon becomes the close
#: reason, with close code 1012: see ``mcustt.viewers``)
VIEWER_REASON: Final = (
    f"{ErrorCode.NODE_DRAINING}: this node is shutting down; reconnect with lastSeq to resume"
)
#: the share of the grace period kept for the viewers' hand-over
VIEWER_SHARE: Final = 0.25
POLL_S: Final = 0.02


async def drain(state: AppState, *, grace_s: float) -> None:
    """Drain this node (idempotent: a second call returns at once)."""
    gate = state.gate
    if not gate.start_draining():
        return
    started = time.monotonic()
    deadline = started + grace_s
    producers, viewers = len(state.pipelines), state.hub.total_viewers
    log.warning("drain started", grace_s=grace_s, producers=producers, viewers=viewers)
    # The producers first: their last finals must reach the viewers before those go.
    viewer_budget = min(2.0, grace_s * VIEWER_SHARE)
    await _drain_producers(state, deadline - viewer_budget)
    await _drain_viewers(state, deadline)
    log.warning(
        "drain finished",
        seconds=round(time.monotonic() - started, 2),
        producers_left=len(state.pipelines),
        viewers_left=state.hub.total_viewers,
    )


async def _drain_producers(state: AppState, deadline: float) -> None:
    """Finalize every pipeline (newcomers too: an upgrade admitted just before the
    drain may open one late), then wait for the transports to release them."""
    reason = NodeDraining(
        "this node is shutting down; reconnect to another node with a fresh ingest token",
    )
    finalizing: dict[int, asyncio.Task[None]] = {}
    try:
        while state.pipelines.live() and time.monotonic() < deadline:
            for pipeline in state.pipelines.live():
                if id(pipeline) not in finalizing:
                    finalizing[id(pipeline)] = asyncio.create_task(
                        pipeline.drain(reason), name=f"drain-{pipeline.session_id}"
                    )
            # The transport sees the pipeline finished, sends the error frame, closes
            # 1012 and releases the claim: the registry empties.
            await asyncio.sleep(POLL_S)
    finally:
        for task in finalizing.values():
            if not task.done():
                task.cancel()
        for task in finalizing.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if state.pipelines.live():
        log.warning("drain: producers still finalizing", producers=len(state.pipelines))


async def _drain_viewers(state: AppState, deadline: float) -> None:
    hub = state.hub
    sessions = {viewer.session_id for viewer in hub.local_viewers()}
    if sessions:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - time.monotonic() - 0.5)):
                await asyncio.gather(*(_round_trip(state, sid) for sid in sessions))
        # Each viewer sends what its mailbox holds (a slow one is cut at the deadline:
        # it resumes from its last seq elsewhere all the same). Polled: no event marks
        # "every relay idle", and a drain happens once in a process's life.
        while time.monotonic() < deadline - 0.3 and not all(  # noqa: ASYNC110
            _flushed(v) for v in hub.local_viewers()
        ):
            await asyncio.sleep(POLL_S)
    hub.kick_all(VIEWER_REASON)
    while hub.total_viewers and time.monotonic() < deadline:  # noqa: ASYNC110 (as above)
        await asyncio.sleep(POLL_S)


async def _round_trip(state: AppState, session_id: str) -> None:
    """Publish a marker on the session's channel and wait for it to come back: the
    broker delivers in order, so every final published before it (the drained
    pipelines' last ones) is in this node's viewers' mailboxes by then."""
    hub = state.hub
    nonce = random_id(12)
    probe = await hub.join(session_id)
    try:
        # A node-to-node control ("_" type): viewers on every node skip it.
        await hub.broker.publish(session_id, json.dumps({"type": "_drained", "nonce": nonce}))
        while True:
            item = await probe.queue.get()
            if isinstance(item, Event) and item.data.get("nonce") == nonce:
                return
    except Exception as exc:  # the broker is down: the viewers replay on reconnect
        log.warning("drain: marker round trip failed", session_id=session_id, error=repr(exc))
    finally:
        await hub.leave(probe)


def _flushed(viewer: Viewer) -> bool:
    """Whether a viewer has sent everything it was given: its relay (``on_kick`` is
    set while one runs) sleeps on an empty mailbox, ready for the hub's direct sends;
    other members of the hub (lease keepers, drain probes) have no relay."""
    if viewer.on_kick is None or viewer.kicked or viewer.closed:
        return True
    return viewer.queue.empty() and viewer.direct is not None
