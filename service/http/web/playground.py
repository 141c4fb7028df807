"""The playground at ``/``: paste a problem and programs, see every function's score.

A static page (``static/playground.*``, no external assets; a Content-Security-Policy keeps it so) that
calls the public API from the browser: ``/v1/score`` for one program, ``/v1/rerank`` for several. It sends
the API key the user types, so the API's key rules apply unchanged.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
ASSETS_URL = "/static/playground"
# everything from this origin only: no CDN, no fonts, no inline script
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def install_playground(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets under ``/static/playground``."""
    app.mount(ASSETS_URL, StaticFiles(directory=STATIC), name="playground-assets")
    page = (STATIC / "playground.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})
