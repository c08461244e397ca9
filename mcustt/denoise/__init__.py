"""Noise reduction in front of VAD and recognition (a session's ``reduceNoise``, a file's
``reduce_noise``).

* ``base.py``: :class:`NoiseSuppressor`, the seam (framing, fixed delay, flush);
* ``webrtc.py``: WebRTC's suppressor from the ``webrtc-noise-gain`` wheel;
* this module: :func:`make_suppressor`.

Callers run :meth:`NoiseSuppressor.process` in a worker thread (``asyncio.to_thread``
per batch): the session pipeline gathers 100 ms per trip (``mcustt.pipeline``), the
file transcriber one decoded chunk (``mcustt.transcribe``).
"""

from __future__ import annotations

from mcustt.config import Settings
from mcustt.denoise.base import NoiseSuppressor
from mcustt.denoise.webrtc import WebRtcSuppressor

__all__ = ["NoiseSuppressor", "WebRtcSuppressor", "make_suppressor"]


def make_suppressor(settings: Settings | None = None) -> NoiseSuppressor:
    """A fresh suppressor for one stream (one per session pipeline or file)."""
    del settings  # one engine, no knobs yet: the signature leaves room for them
    return WebRtcSuppressor()
