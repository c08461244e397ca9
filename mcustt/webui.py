"""The embeddable caption page (§8): static files from ``web/embed/``
(found by :mod:`mcustt.resources`, in a checkout or an installed wheel).

The page is the same for every session; it reads its token from the URL fragment
(never sent to the server) and talks to the SSE feed. The tenant's allowed origins
become a ``frame-ancestors`` policy so only their pages can frame it.

``/try`` is the interactive try-it page (``try.html``, ``try.js``, ``try.css`` beside
it): a tenant key pasted into it stays in the page's memory and drives the public API
(sessions, WHIP or ``/ws/stt`` ingest, ``/ws/subscribe``, transcript, summary, ask,
corrections) from the same origin.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

from mcustt import tenants
from mcustt.resources import WEB_DIR
from mcustt.state import app_state


def assets() -> StaticFiles:
    return StaticFiles(directory=WEB_DIR, check_dir=False)


async def embed_page(request: Request) -> Response:
    state = app_state(request)
    session = await state.sessions.get(request.path_params["session_id"])
    ancestors = "*"
    if session is not None:
        tenant = await tenants.find(state.db, session.tenant_id)
        stored = (tenant.allowed_origins if tenant else None) or []
        if tenant is not None and stored and "*" not in stored:
            # Only entries that parse as origins reach the header (a row from before
            # origins were validated could otherwise break it or inject a directive);
            # with none left, only our own pages may frame it.
            ancestors = " ".join(["'self'", *tenants.allowed_origins(tenant)])
    # An unknown session still gets the page: it explains the problem to the viewer
    # instead of leaving a blank box in someone's iframe.
    return FileResponse(
        WEB_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": (
                "default-src 'self'; img-src 'self' https: data:; "
                f"style-src 'self' 'unsafe-inline'; frame-ancestors {ancestors}"
            ),
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


#: The try-it page holds a tenant key, so nothing but its own files may run or load in
#: it, and no other site may frame it (a framed key form invites clickjacking).
#: ``connect-src 'self'`` covers the page's own ``ws:``/``wss:`` sockets (CSP 3);
#: ``media-src blob:`` lets it play back a chosen file. WebRTC is not fetched, so it
#: needs no directive.
TRY_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


async def try_page(request: Request) -> Response:
    return FileResponse(
        WEB_DIR / "try.html",
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": TRY_CSP,
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        },
    )
