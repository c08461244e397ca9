"""Values every node must agree on, kept in the shared database."""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError

from mcustt.store.db import Database
from mcustt.store.models import Meta

JWT_SECRET_KEY = "jwt_secret"


async def jwt_secret(db: Database) -> str:
    """The generated JWT secret: created once; a racing node's insert loses and reads."""
    async with db.session() as s:
        row = await s.get(Meta, JWT_SECRET_KEY)
        if row is not None:
            return row.value
        s.add(Meta(key=JWT_SECRET_KEY, value=secrets.token_urlsafe(48)))
        try:
            await s.commit()
        except IntegrityError:
            await s.rollback()
    async with db.session() as s:
        row = await s.get(Meta, JWT_SECRET_KEY)
        assert row is not None
        return row.value
