"""What runs inside a sphinx worker process: decoders and the loop over its pipe.

The pool (``pool.py``) spawns :func:`worker_main`; the server process uses only the
constants and the :class:`WorkerStats` shape of this module.

A Decoder costs ~100 MB and ~0.6 s to build, so each worker keeps a small free-list of
them (built lazily) and pins an utterance to one decoder only while the utterance lasts.

Wire protocol (tuples pickled over one duplex pipe; ``uid`` names an utterance)::

    parent -> worker                     worker -> parent
    ("start", uid)                       (nothing unless it fails: see "ack"/"final")
    ("audio", uid, pcm)                  ("ack", uid, nbytes, hyp_text | None, error | None)
    ("end", uid)                         ("final", uid, text | None, error | None, words)
    ("abort", uid)                       (nothing)
    ("stats", req)                       ("stats", req, WorkerStats)
    ("stop",)                            (exits)
                                         ("ready", pid) once at boot, or ("fatal", message)

Every "audio" gets exactly one "ack", even for an utterance that failed or was
aborted: the pool counts on it to bound the bytes in flight.

A final's ``words`` (issue 17) are ``(word, start_ms, end_ms)`` tuples relative to the
utterance's first byte, from the decoder's segmentation (:func:`words_of`); an empty
tuple when it has none.
"""

from __future__ import annotations

import os
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any, Final, TypedDict

import structlog

log = structlog.get_logger(__name__)

#: The one model: every utterance is decoded, and labelled, as this language.
LANG: Final = "en-US"
MODEL: Final = "pocketsphinx-en-us"
#: pocketsphinx options: without the second (fwdflat) and lattice (bestpath) passes
#: end_utt takes ~15 ms instead of 150-400 ms, at about the same accuracy.
#: Narrower search (issue 17): beams 1e-40/1e-25 (defaults 1e-48/7e-29) and at most 3000
#: active HMMs a frame (default 30000) cut decoding from ~0.24 to ~0.10 s of CPU per
#: second of audio, so 6 real-time streams leave room on 2 cores and finals do not
#: queue behind other streams' audio; WER on the test fixtures did not rise
#: (scripts/bench_wer.py; the README's Benchmarks).
DECODER_OPTIONS: Final[dict[str, Any]] = {
    "samprate": 16000,
    "fwdflat": False,
    "bestpath": False,
    "beam": 1e-40,
    "wbeam": 1e-25,
    "maxhmmpf": 3000,
    "loglevel": "FATAL",
}


class WorkerStats(TypedDict):
    index: int
    pid: int
    active: int  # utterances holding a decoder now
    idle: int  # decoders in the free-list
    created: int  # decoders ever built by this worker
    peak_active: int  # most utterances that held a decoder at once
    utterances: int  # utterances started


def worker_main(conn: Connection, index: int, max_idle: int, prebuilt: int = 1) -> None:
    """Entry point of a worker process (spawned, so it imports this module afresh)."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop,
    # otherwise a shutdown would look like a crash of every worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _WorkerLoop(conn, index, max_idle, prebuilt).run()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away; nobody is left to tell
    except BaseException:
        log.exception("sphinx_worker_failed", index=index, pid=os.getpid())
        raise


class _WorkerLoop:
    def __init__(self, conn: Connection, index: int, max_idle: int, prebuilt: int = 1) -> None:
        self.conn = conn
        self.index = index
        self.max_idle = max_idle
        self.prebuilt = prebuilt
        self.free: list[Any] = []
        self.active: dict[int, Any] = {}
        self.created = 0
        self.peak_active = 0
        self.utterances = 0
        self.decoder_cls: Any = None

    def run(self) -> None:
        try:
            # Imported here so the server process does not load pocketsphinx at all.
            from pocketsphinx import Decoder, get_model_path

            model_dir = os.path.join(get_model_path(), "en-us")
            if not os.path.isdir(model_dir):
                raise FileNotFoundError(f"pocketsphinx model not found at {model_dir}")
        except Exception as exc:
            self.conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
            return
        self.decoder_cls = Decoder
        try:
            # Decoders built before "ready" (0.6-2 s each): the node's first utterance
            # does not wait for one, so its first caption is not late (issue 17); with
            # MCUSTT_SPHINX_DECODERS at the peak overlap, no utterance ever builds one
            # and the worker's memory does not grow after its start (issue 13's soak).
            for _ in range(self.prebuilt):
                self.free.append(self._new_decoder())
        except Exception as exc:
            self.conn.send(("fatal", _describe(exc)))
            return
        self.conn.send(("ready", os.getpid()))
        while True:
            msg = self.conn.recv()
            kind = msg[0]
            if kind == "audio":
                self.audio(msg[1], msg[2])
            elif kind == "start":
                self.start(msg[1])
            elif kind == "end":
                self.end(msg[1])
            elif kind == "abort":
                self.abort(msg[1])
            elif kind == "stats":
                self.conn.send(("stats", msg[1], self.stats()))
            elif kind == "stop":
                return
            else:
                log.error("sphinx_worker_bad_request", index=self.index, kind=kind)

    def start(self, uid: int) -> None:
        try:
            decoder = self.free.pop() if self.free else self._new_decoder()
            decoder.start_utt()
        except Exception as exc:
            # No reply of its own: the stream learns it from its first ack or its final.
            self.active[uid] = _Failed(_describe(exc))
            return
        self.active[uid] = decoder
        self.utterances += 1
        self.peak_active = max(self.peak_active, self._n_active())

    def audio(self, uid: int, pcm: bytes) -> None:
        decoder = self.active.get(uid)
        text: str | None = None
        error: str | None = None
        if isinstance(decoder, _Failed):
            error = decoder.error
            del self.active[uid]
        elif decoder is not None:  # None: aborted or failed earlier; the ack still counts
            try:
                decoder.process_raw(pcm, False, False)
                hyp = decoder.hyp()
                text = hyp.hypstr if hyp is not None else None
            except Exception as exc:
                # Its state is unknown now: never reuse it.
                del self.active[uid]
                error = _describe(exc)
        self.conn.send(("ack", uid, len(pcm), text, error))

    def end(self, uid: int) -> None:
        decoder = self.active.pop(uid, None)
        text: str | None = None
        error: str | None = None
        words: tuple[tuple[str, int, int], ...] = ()
        if isinstance(decoder, _Failed):
            error = decoder.error
        elif decoder is not None:
            try:
                decoder.end_utt()
                hyp = decoder.hyp()
                text = hyp.hypstr if hyp is not None else None
                if text:
                    words = words_of(decoder.seg())
            except Exception as exc:
                error = _describe(exc)
            else:
                self._release(decoder)
        self.conn.send(("final", uid, text, error, words))

    def abort(self, uid: int) -> None:
        decoder = self.active.pop(uid, None)
        if decoder is None or isinstance(decoder, _Failed):
            return
        try:
            decoder.end_utt()
        except Exception:
            log.exception("sphinx_worker_abort_failed", index=self.index, uid=uid)
        else:
            self._release(decoder)

    def stats(self) -> WorkerStats:
        return WorkerStats(
            index=self.index,
            pid=os.getpid(),
            active=self._n_active(),
            idle=len(self.free),
            created=self.created,
            peak_active=self.peak_active,
            utterances=self.utterances,
        )

    def _new_decoder(self) -> Any:
        decoder = self.decoder_cls(**DECODER_OPTIONS)
        self.created += 1
        return decoder

    def _release(self, decoder: Any) -> None:
        # The reused decoder keeps its live cepstral-mean estimate: on the test voices
        # that lowers WER (0.90 vs 1.05 when reset to the model's prior per utterance).
        if len(self.free) < self.max_idle:
            self.free.append(decoder)

    def _n_active(self) -> int:
        return sum(1 for d in self.active.values() if not isinstance(d, _Failed))


#: Segments that are no words: silence, sentence bounds, and the model's noise "words"
#: (``[NOISE]``, ``[BREATH]``, ...; ``++GARBAGE++`` in some dictionaries).
_FILLERS: Final = frozenset({"<s>", "</s>", "<sil>"})
#: 10 ms per frame: the decoder's default frame rate (``-frate 100``)
FRAME_MS: Final = 10


def words_of(segments: Any) -> tuple[tuple[str, int, int], ...]:
    """The words of a decoded utterance with their times (ms from its first byte).

    ``segments``: ``Decoder.seg()``, whose ``word``s include fillers (dropped) and
    alternate pronunciations as ``word(2)`` (shown as ``word``, as the hypothesis does).
    A segment's ``end_frame`` is its last frame, so it ends one frame later.
    """
    out: list[tuple[str, int, int]] = []
    for seg in segments:
        word = str(seg.word)
        if word in _FILLERS or word.startswith(("[", "+")):
            continue
        if word.endswith(")") and "(" in word:
            word = word[: word.rindex("(")]
        if not word:
            continue
        start = int(seg.start_frame) * FRAME_MS
        out.append((word, start, max(int(seg.end_frame) + 1, 0) * FRAME_MS))
    return tuple(out)


class _Failed:
    """Placeholder for an utterance whose decoder could not be started."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()
