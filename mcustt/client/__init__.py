"""An async Python client for an mcustt server: REST, a producer and a viewer.

::

    async with Client("http://127.0.0.1:8000", tenant_key=KEY) as client:
        session = await client.create_session(title="Standup")
        async with client.producer(session) as producer:
            await producer.send_file("meeting.mp4")   # any audio/video PyAV can decode
            await producer.stop()                     # ends the session
        print(await client.transcript(session["sessionId"], "srt"))
        summary = await client.summary(session["sessionId"], wait=True)
        if summary["status"] == "ready":
            print(summary["content"]["tldr"])

* :class:`Client` (:mod:`.rest`) wraps every REST endpoint; its answers are the
  TypedDicts of :mod:`mcustt.wire`, and an error answer raises a
  :class:`MCUSTTClientError` subclass (:mod:`.errors`) carrying the envelope's ``code``.
* :class:`Producer` (:mod:`.producer`) streams PCM16 16 kHz mono in 20 ms frames to
  ``/ws/stt``, paced in real time or as fast as the server reads, and survives a dropped
  socket: it mints a fresh single-use ingest token with the owner secret and reconnects,
  continuing from the frame that failed; the server continues the session's seq.
* :class:`Viewer` (:mod:`.viewer`) follows ``/ws/subscribe`` and resumes with
  ``lastSeq`` after a disconnect, so every final is yielded exactly once.
* :mod:`.audio` reads or decodes (PyAV) any audio file into the wire format.

The ``mcustt`` command's client commands (:mod:`.cli`) are not imported here: a program
using the client does not need them (nor the demo's embedded server).
"""

from mcustt.client.audio import audio_duration, decode_audio, read_wav
from mcustt.client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    MCUSTTClientError,
    NotFound,
    RateLimited,
    ServerError,
    StreamClosed,
    Unauthorized,
    Unavailable,
    Unprocessable,
)
from mcustt.client.producer import Producer
from mcustt.client.rest import DEFAULT_URL, Client
from mcustt.client.sockets import Event
from mcustt.client.viewer import Viewer

__all__ = [
    "DEFAULT_URL",
    "BadRequest",
    "Client",
    "Conflict",
    "Event",
    "Forbidden",
    "MCUSTTClientError",
    "NotFound",
    "Producer",
    "RateLimited",
    "ServerError",
    "StreamClosed",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "Viewer",
    "audio_duration",
    "decode_audio",
    "read_wav",
]
