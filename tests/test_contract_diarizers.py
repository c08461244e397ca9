"""The diarization contract (mcustt.testing.diarizer) run against every diarizer mcustt
ships, each built through ``load_diarizer`` as the app builds it: ``resemblyzer`` (the
``mcustt[diarization]`` extra, which ``scripts/install --test`` installs, so CI runs it)
and ``none`` (what a node without the extra gets)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from conftest import need_service

from mcustt.config import Settings
from mcustt.diarization import Diarizer, extra_installed, load_diarizer
from mcustt.diarization.none import NoDiarizer
from mcustt.testing.diarizer import DiarizerContract


async def _built(settings: Settings, kind: str) -> AsyncIterator[Diarizer]:
    diarizer = load_diarizer(settings)
    assert diarizer.name == kind
    yield diarizer
    await diarizer.aclose()


class TestResemblyzerDiarizer(DiarizerContract):
    @pytest.fixture
    async def diarizer(self) -> AsyncIterator[Diarizer]:
        if not extra_installed():
            need_service("mcustt[diarization]", "scripts/install --test installs the extra")
        async for diarizer in _built(Settings(diarizer="resemblyzer"), "resemblyzer"):
            assert diarizer.available
            yield diarizer


class TestNoDiarizer(DiarizerContract):
    @pytest.fixture
    async def diarizer(self) -> AsyncIterator[Diarizer]:
        async for diarizer in _built(Settings(diarizer="none"), "none"):
            assert isinstance(diarizer, NoDiarizer)
            yield diarizer
