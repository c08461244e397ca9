"""Per-IP rate limits (§16) on the maintained ``limits`` library.

Counted in-process by default and in Redis when ``MCUSTT_REDIS_URL`` is set, so every
node spends from one budget. ``X-Forwarded-For`` is believed only when the direct peer
is one of ``MCUSTT_TRUSTED_PROXIES``.
"""

from __future__ import annotations

import time
from typing import Literal

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from mcustt.config import Settings
from mcustt.errors import RateLimited

#: ``ws_upgrade`` is the budget for opening any stream: ``/ws/stt`` and ``/ws/subscribe``
#: upgrades, WHIP offers and SSE feeds (one viewer or producer costs a node the same
#: whichever transport it picked, so one budget, one setting).
Rule = Literal["create_session", "summarize", "ws_upgrade", "tts"]


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.storage: Storage
        if settings.redis_url:
            self.storage = RedisStorage(
                "async+" + settings.redis_url,
                implementation="redispy",
                key_prefix=f"{settings.redis_prefix}:limits",
            )
        else:
            self.storage = MemoryStorage()
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.rules: dict[Rule, RateLimitItem] = {
            "create_session": parse(settings.rate_create_session),
            "summarize": parse(settings.rate_summarize),
            "ws_upgrade": parse(settings.rate_ws_upgrade),
            # Keyed by tenant id, not address (issue 16).
            "tts": parse(settings.rate_tts),
        }

    async def hit(self, rule: Rule, client_ip: str) -> None:
        """Count one request; raise :class:`RateLimited` (with Retry-After) when over."""
        item = self.rules[rule]
        if await self.strategy.hit(item, rule, client_ip):
            return
        reset_at, _remaining = await self.strategy.get_window_stats(item, rule, client_ip)
        raise RateLimited(
            f"rate limit {item} exceeded; retry later",
            retry_after=max(1, int(reset_at - time.time()) + 1),
        )

    async def aclose(self) -> None:
        if isinstance(self.storage, MemoryStorage):
            # MemoryStorage runs an expiry timer task; stop it with the app.
            timer = getattr(self.storage, "timer", None)
            if timer is not None:
                timer.cancel()
