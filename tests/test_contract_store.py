"""The store contract (mcustt.testing.store) run against both databases mcustt supports.

PostgreSQL is the run's shared database (``pg_url``): under ``CI=true`` its absence
fails the run instead of skipping these tests.
"""

from __future__ import annotations

import pytest

from mcustt.testing.store import StoreContract


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def database_url(self, sqlite_url: str) -> str:
        return sqlite_url


@pytest.mark.postgres
class TestPostgresStore(StoreContract):
    @pytest.fixture
    def database_url(self, pg_url: str) -> str:
        return pg_url
