"""Running the app under uvicorn, the same way for the CLI, tests and benchmarks."""

from __future__ import annotations

import uvicorn

from mcustt.config import Settings
from mcustt.ingest.audio import MAX_FRAME_BYTES


def uvicorn_config(settings: Settings, *, host: str, port: int, **extra: object) -> uvicorn.Config:
    from mcustt.app import create_app

    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        # Frames up to the contract's 1 MB reach the app, which closes 1009 with a
        # reason; uvicorn itself closes anything larger (also 1009).
        ws_max_size=MAX_FRAME_BYTES + 64 * 1024,
        ws="websockets-sansio",
        access_log=False,  # our access log omits query strings, which carry tokens
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=15,
        **extra,  # type: ignore[arg-type]
    )


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    config = uvicorn_config(settings, host=host or settings.host, port=port or settings.port)
    uvicorn.Server(config).run()
