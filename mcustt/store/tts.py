"""Text-to-speech audio rows: the OGG/Opus bytes under their tenant, until they expire."""

from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import col, select

from mcustt.store.db import Database
from mcustt.store.models import TTSAudio


class TTSQueries:
    db: Database

    async def insert_tts_audio(self, row: TTSAudio) -> TTSAudio:
        async with self.db.session() as s:
            s.add(row)
            await s.commit()
            await s.refresh(row)
            return row

    async def get_tts_audio(self, audio_id: str) -> TTSAudio | None:
        """The row, whoever's it is: callers check the tenant or a signature."""
        async with self.db.session() as s:
            return await s.get(TTSAudio, audio_id)

    async def delete_expired_tts_audio(self, *, now: float, limit: int) -> int:
        """Delete (up to ``limit``) rows whose ``expires_at`` has passed; how many went."""
        async with self.db.session() as s:
            result = await s.exec(
                select(TTSAudio.id).where(col(TTSAudio.expires_at) <= now).limit(limit)
            )
            ids = list(result.all())
            if ids:
                await s.exec(delete(TTSAudio).where(col(TTSAudio.id).in_(ids)))
                await s.commit()
            return len(ids)
