"""The web dashboard: a page at `/` and its static files, shipped with the package.

The dashboard is plain HTML, CSS and JavaScript modules that read the REST API from the
browser; nothing is built at run time and nothing is fetched from outside the server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from api.routes import pe_view, run_pe_view, sweeps_list

router = APIRouter()
# The data routes the dashboard added are part of the REST API, under its version prefix;
# each carries the same sign-in dependency as the other routes.
for _module in (pe_view, run_pe_view, sweeps_list):
    router.include_router(_module.router, prefix="/api/v1")

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}

# NOTE: the files are small and change only with the package, but a browser must not keep
# an old module after an upgrade, so it revalidates each time.
NO_STALE = {"Cache-Control": "no-cache"}


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The dashboard's single page; its views are chosen by the URL fragment."""
    return FileResponse(
        DASHBOARD_DIR / "index.html", media_type=MEDIA_TYPES[".html"], headers=NO_STALE
    )


@router.get("/dashboard/{path:path}", include_in_schema=False)
def static_file(path: str) -> FileResponse:
    """One file of the dashboard; only files inside its folder with a known type are served."""
    target = (DASHBOARD_DIR / path).resolve()
    media_type = MEDIA_TYPES.get(target.suffix)
    if media_type is None or not target.is_relative_to(DASHBOARD_DIR) or not target.is_file():
        raise HTTPException(404, f"dashboard file {path!r} does not exist")
    return FileResponse(target, media_type=media_type, headers=NO_STALE)
