"""The page at ``/``: try mrdserve from a browser (upload, choose, watch the job, view, download). Plain HTML,
CSS and JavaScript in ``service/web/``, served from here: no build step, nothing fetched from the internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse

WEB = Path(__file__).resolve().parents[1] / "web"
WEB_ASSETS = "/web"

router = APIRouter(include_in_schema=False)


def serve_web_page(app: FastAPI) -> None:
    """Mount the page's assets at ``WEB_ASSETS`` and the page itself at ``/``."""
    from fastapi.staticfiles import StaticFiles

    app.mount(WEB_ASSETS, StaticFiles(directory=WEB), name="web")
    app.include_router(router)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
