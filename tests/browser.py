"""Real-browser test support: Debian's Chromium under Playwright, and a second origin."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conftest import need_service

CHROMIUM = os.environ.get("MCUSTT_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Without the background-networking flags Chromium keeps dialling Google's hosts, which
#: this closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> str:
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)):
        need_service("chromium", f"{CHROMIUM} not found: run scripts/install --test")
    return CHROMIUM


@asynccontextmanager
async def launch(extra_args: list[str] | None = None) -> AsyncIterator[Any]:
    """Headless Chromium (a fresh profile each time), driven by Playwright."""
    executable = require_chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        need_service("playwright", str(exc))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS + (extra_args or []), headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


class OtherOrigin:
    """A second origin: a tiny threaded HTTP server for the pages a test puts in ``pages``."""

    def __init__(self, pages: dict[str, str] | None = None) -> None:
        self.pages: dict[str, str] = dict(pages or {})
        served = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = served.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> OtherOrigin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- colours, for contrast checks (WCAG 2 relative luminance) --


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """The WCAG contrast ratio of two sRGB colours (1 to 21)."""

    def lum(rgb: tuple[int, int, int]) -> float:
        lin = [
            c / 255 / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4
            for c in rgb
        ]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def rgb_of(css: str) -> tuple[int, int, int]:
    """``rgb(1, 2, 3)`` / ``rgba(1, 2, 3, 1)`` as a tuple."""
    parts = css[css.index("(") + 1 : css.index(")")].replace(",", " ").split()
    return int(float(parts[0])), int(float(parts[1])), int(float(parts[2]))
