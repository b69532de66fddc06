"""``/docs`` (Swagger UI) and ``/redoc`` from assets installed with fastapi-offline, never from a CDN, so the API
documentation works in a hospital network without internet access."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import Response

DOCS_ASSETS = "/docs-assets"
TITLE = "mrdserve API"

router = APIRouter(include_in_schema=False)


def serve_docs_locally(app: FastAPI) -> None:
    """Mount the bundled assets at ``DOCS_ASSETS`` and add the ``/docs`` and ``/redoc`` pages to ``app``."""
    import fastapi_offline
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    app.include_router(router)


def _openapi_url(request: Request) -> str:
    return request.app.openapi_url or "/openapi.json"


@router.get("/docs")
async def swagger_ui(request: Request) -> Response:
    return get_swagger_ui_html(openapi_url=_openapi_url(request), title=TITLE,
                               swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                               swagger_ui_parameters={"validatorUrl": None})  # no badge from the internet


@router.get("/redoc")
async def redoc(request: Request) -> Response:
    return get_redoc_html(openapi_url=_openapi_url(request), title=TITLE,
                          redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                          redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)
