"""Speaker names (issue 14): naming a session's participants, live and after the end.

A line of a participant's track stores the participant id; the name is stored once per
session (:mod:`mcustt.store.speakers`) and looked up whenever lines are shown, so a
rename reaches everything: viewers get a ``speaker`` event and rename the lines they
hold, and exports, replays and summaries read the current name.
"""

from __future__ import annotations

import re
import unicodedata

from mcustt import events, wire
from mcustt.errors import BadRequest
from mcustt.fanout import Hub
from mcustt.store.models import Session
from mcustt.store.repo import Repo

_PARTICIPANT_ID = re.compile(wire.PARTICIPANT_ID_PATTERN)
#: The longest display name (the ``speakers.name`` column).
MAX_NAME = 100


def speaker_id(raw: str) -> str:
    """A participant id from a path, checked like the ids ingest tokens are bound to."""
    if not _PARTICIPANT_ID.fullmatch(raw):
        raise BadRequest("a speaker id is 1-64 letters, digits and . _ : @ - characters")
    return raw


def display_name(raw: str) -> str:
    """A name as shown: one line (runs of whitespace become one space: a newline would
    end a subtitle cue), no control characters, trimmed.

    Raises:
        BadRequest: nothing visible is left.
    """
    name = " ".join(raw.split())
    name = "".join(c for c in name if unicodedata.category(c) != "Cc")[:MAX_NAME].strip()
    if not name:
        raise BadRequest("name must contain a visible character")
    return name


async def rename(
    repo: Repo, hub: Hub, session: Session, participant: str, name: str
) -> wire.Speaker:
    """Store ``participant``'s name; a live session's viewers are told at once (on every
    node: the event goes through the session's channel)."""
    await repo.set_speaker_name(session.id, participant, name)
    if session.status == "live":
        await hub.publish(session.id, events.speaker_event(participant, name))
    return events.speaker(participant, name)


async def track_connected(
    repo: Repo, hub: Hub, session_id: str, participant: wire.Speaker
) -> wire.Speaker:
    """A participant's track connected with the name its ingest token carries: record it
    (a default name, the id, keeps a name set before) and return the speaker as named
    now, for the track's events. When that changes a name viewers know, they are told."""
    pid = participant["id"]
    before = await repo.speaker_name(session_id, pid)
    await repo.upsert_speaker(session_id, pid, participant["name"])
    name = await repo.speaker_name(session_id, pid) or participant["name"]
    if before is not None and before != name:
        await hub.publish(session_id, events.speaker_event(pid, name))
    return events.speaker(pid, name)


async def listing(repo: Repo, session: Session) -> wire.SpeakerList:
    rows = await repo.speakers(session.id)
    return {
        "sessionId": session.id,
        "speakers": [events.speaker(row.speaker_id, row.name) for row in rows],
    }
