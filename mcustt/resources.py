"""Where the files that are not Python live: the embed page and the migrations.

The design card keeps them at the top of the checkout (``web/embed/``, ``alembic/``).
A wheel carries them inside the package, as ``mcustt/_web/embed/`` and
``mcustt/_alembic/`` (``[tool.hatch.build.targets.wheel.force-include]`` in
``pyproject.toml``); an editable install runs the package from the checkout, where they
sit beside it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: The checkout this package runs from, if it does (an editable install).
_CHECKOUT = Path(__file__).resolve().parent.parent


def _locate(packaged: str, checkout: str) -> Path:
    shipped = files("mcustt").joinpath(packaged)
    # Both users need a real directory (Starlette's StaticFiles, Alembic's
    # script_location), so a package imported from a zip file is not supported.
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped
    return _CHECKOUT / checkout


#: ``index.html``, ``embed.js``, ``embed.css`` of the embeddable caption page.
WEB_DIR = _locate("_web/embed", "web/embed")
#: Alembic's script location: ``env.py`` and ``versions/``.
ALEMBIC_DIR = _locate("_alembic", "alembic")
