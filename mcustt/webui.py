"""The embeddable caption page (§8): static files from ``web/embed/``
(found by :mod:`mcustt.resources`, in a checkout or an installed wheel).

The page is the same for every session; it reads its token from the URL fragment
(never sent to the server) and talks to the SSE feed. The tenant's allowed origins
become a ``frame-ancestors`` policy so only their pages can frame it.
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
