"""Per-IP rate limits (§16) on the maintained ``limits`` library.

Counted in-process by default and in Redis when ``MCUSTT_REDIS_URL`` is set, so every
node spends from one budget. ``X-Forwarded-For`` is believed only when the direct peer
is one of ``MCUSTT_TRUSTED_PROXIES``.

While Redis is unreachable the limits fail open to a per-node count (issue 13): each
node then allows the full budget by itself, which is looser by the number of nodes, but
captions and sign-ups keep working through a Redis restart, instead of every request
that is counted failing (a 500) or waiting on Redis's retries. Redis is tried again
every :data:`REDIS_RETRY_S`.
"""

from __future__ import annotations

import time
from typing import Any, Literal, cast

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mcustt.config import Settings
from mcustt.errors import RateLimited

log = structlog.get_logger(__name__)

#: After Redis failed a count, counts stay on this node this long before Redis is tried
#: again (one failing request per node and period, not one per request).
REDIS_RETRY_S = 2.0

#: ``ws_upgrade`` is the budget for opening any stream: ``/ws/stt`` and ``/ws/subscribe``
#: upgrades, WHIP offers and SSE feeds (one viewer or producer costs a node the same
#: whichever transport it picked, so one budget, one setting).
Rule = Literal["create_session", "summarize", "ws_upgrade", "tts"]


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.storage: Storage
        #: the per-node count used while Redis is unreachable (None without Redis)
        self.local: MovingWindowRateLimiter | None = None
        self._redis_down_until = 0.0
        if settings.redis_url:
            # Fail fast (one retry, for a connection Redis closed in a restart): the
            # fallback answers instead of redis-py's seconds of retries.
            options = cast(Any, {"retry": Retry(NoBackoff(), 1), "socket_connect_timeout": 1.0})
            self.storage = RedisStorage(
                "async+" + settings.redis_url,
                implementation="redispy",
                key_prefix=f"{settings.redis_prefix}:limits",
                wrap_exceptions=True,
                **options,
            )
            self.local = MovingWindowRateLimiter(MemoryStorage())
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
        strategy = self.strategy
        if self.local is not None and time.monotonic() < self._redis_down_until:
            strategy = self.local
        try:
            if await strategy.hit(item, rule, client_ip):
                return
            reset_at, _remaining = await strategy.get_window_stats(item, rule, client_ip)
        except StorageError as exc:
            if self.local is None or strategy is self.local:
                raise
            log.warning("rate limits: Redis unreachable, counting per node", error=str(exc))
            self._redis_down_until = time.monotonic() + REDIS_RETRY_S
            await self.hit(rule, client_ip)
            return
        raise RateLimited(
            f"rate limit {item} exceeded; retry later",
            retry_after=max(1, int(reset_at - time.time()) + 1),
        )

    async def aclose(self) -> None:
        for storage in (self.storage, self.local.storage if self.local else None):
            if isinstance(storage, MemoryStorage):
                # MemoryStorage runs an expiry timer task; stop it with the app.
                timer = getattr(storage, "timer", None)
                if timer is not None:
                    timer.cancel()
