"""Speaker names per session (issue 14): participant id -> display name.

Lines keep the participant id; the name is looked up at read time (exports, summaries,
replays), so a rename applies to everything already said. Both writes are one atomic
upsert (``INSERT ... ON CONFLICT``): a track connecting while the owner renames it
cannot fail on the primary key on either database.
"""

from __future__ import annotations

import time

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from mcustt.store.db import Database
from mcustt.store.models import SpeakerName


class SpeakerQueries:
    db: Database

    async def upsert_speaker(self, session_id: str, speaker_id: str, name: str) -> None:
        """Record a participant's name when its track connects (the name its ingest token
        carries). A default name (the id itself) never replaces a name already set: a
        track reconnecting with an unnamed token keeps the name the owner gave it."""
        await self._upsert(session_id, speaker_id, name, keep_named=name == speaker_id)

    async def set_speaker_name(self, session_id: str, speaker_id: str, name: str) -> None:
        """Set a participant's name (the owner's rename): always replaces."""
        await self._upsert(session_id, speaker_id, name, keep_named=False)

    async def _upsert(
        self, session_id: str, speaker_id: str, name: str, *, keep_named: bool
    ) -> None:
        dialect = postgresql if not self.db.sqlite else sqlite
        stmt = dialect.insert(SpeakerName).values(
            session_id=session_id, speaker_id=speaker_id, name=name, updated_at=time.time()
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["session_id", "speaker_id"],
            set_={"name": stmt.excluded.name, "updated_at": stmt.excluded.updated_at},
            # keep_named: only a row still holding its default name (the id) is updated.
            where=(col(SpeakerName.name) == col(SpeakerName.speaker_id)) if keep_named else None,
        )
        async with self.db.session() as s:
            await s.exec(stmt)
            await s.commit()

    async def speaker_name(self, session_id: str, speaker_id: str) -> str | None:
        async with self.db.session() as s:
            row = await s.get(SpeakerName, (session_id, speaker_id))
            return row.name if row is not None else None

    async def speaker_names(self, session_id: str) -> dict[str, str]:
        """Participant id -> current name, for every named speaker of the session."""
        return {row.speaker_id: row.name for row in await self.speakers(session_id)}

    async def speakers(self, session_id: str) -> list[SpeakerName]:
        """The session's speakers, by id."""
        async with self.db.session() as s:
            rows = await s.exec(
                select(SpeakerName)
                .where(SpeakerName.session_id == session_id)
                .order_by(col(SpeakerName.speaker_id))
            )
            return list(rows.all())
