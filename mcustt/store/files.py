"""File transcription (issue 15): a transcribed file's session, and the file itself while
its job waits.

A file's session is written whole, in one transaction: the ended session row, every
line, and its ``session.ended`` webhook event, so readers never see a half-made one.
The waiting file is stored in slices of :data:`CHUNK_BYTES` (:class:`FileAudioChunk`)
that are written and read one at a time: neither side holds the whole file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import delete
from sqlmodel import col, select

from mcustt.store.db import Database
from mcustt.store.models import FileAudioChunk, Session, TranscriptLine
from mcustt.store.sessions import _record_session_ended

#: One stored slice of a waiting file.
CHUNK_BYTES = 1024 * 1024


class FileQueries:
    db: Database

    async def insert_file_session(self, session: Session, lines: list[TranscriptLine]) -> bool:
        """Insert an ended session with its lines (and its ``session.ended`` event).
        False, and nothing written, when a session with this id already exists (a job
        run again after its first run stored it)."""
        async with self.db.session() as s:
            if await s.get(Session, session.id) is not None:
                return False
            s.add(session)
            await s.flush()
            for line in lines:
                s.add(line)
            await s.flush()
            await _record_session_ended(s, session.id)
            await s.commit()
        return True

    async def store_file_audio(self, audio_id: str, path: Path) -> int:
        """Copy the file at ``path`` into the store, slice by slice; its size."""
        size = 0
        idx = 0
        with path.open("rb") as f:
            while True:
                data = await asyncio.to_thread(f.read, CHUNK_BYTES)
                if not data:
                    break
                async with self.db.session() as s:
                    s.add(FileAudioChunk(audio_id=audio_id, idx=idx, data=data))
                    await s.commit()
                idx += 1
                size += len(data)
        return size

    async def load_file_audio(self, audio_id: str, path: Path) -> int:
        """Write the stored file to ``path``, slice by slice; its size (0: none stored)."""
        size = 0
        idx = 0
        with path.open("wb") as f:
            while True:
                async with self.db.session() as s:
                    row = await s.exec(
                        select(FileAudioChunk.data).where(
                            FileAudioChunk.audio_id == audio_id, FileAudioChunk.idx == idx
                        )
                    )
                    data = row.first()
                if data is None:
                    break
                await asyncio.to_thread(f.write, data)
                size += len(data)
                idx += 1
        return size

    async def delete_file_audio(self, audio_id: str) -> None:
        async with self.db.session() as s:
            await s.exec(delete(FileAudioChunk).where(col(FileAudioChunk.audio_id) == audio_id))
            await s.commit()
