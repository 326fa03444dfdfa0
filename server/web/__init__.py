"""The web dashboard: one static page at ``/`` and its files under ``/static``.

The page holds no data and needs no auth; its JavaScript calls the /v1 API
with the token the user types in (docs/dashboard.md).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# Everything the page loads is its own: no inline script, no third-party
# origin. uPlot sets element styles from script, which style-src allows.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/`` and its static files under ``/static``."""

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            media_type="text/html",
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                # The page is tiny and changes with each release: always revalidate.
                "Cache-Control": "no-cache",
            },
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
