"""Self-hosted API docs: Swagger UI at ``/docs`` and ReDoc at ``/redoc``, with no CDN.

Their JavaScript and CSS come from the ``fastapi-offline`` wheel (Swagger UI 5, ReDoc 2), served under
``/static/docs``. The OpenAPI document gets its tags (one group per concern), request examples
(``service.http.web.examples``) and the optional bearer key here, so the routes stay one line each.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.http.web.examples import REQUEST_EXAMPLES

ASSETS_URL = "/static/docs"
# (path prefix, tag): the first match names an operation's group
TAG_OF_PATH: tuple[tuple[str, str], ...] = (
    ("/v1/score", "scoring"), ("/v1/split", "scoring"), ("/v1/rerank", "rerank"), ("/get_reward", "scoring"),
    ("/v1/models", "models"), ("/health", "operations"), ("/ready", "operations"), ("/metrics", "operations"),
)
TAGS: list[dict[str, str]] = [
    {"name": "scoring", "description": "Split a program into function steps and score every step; "
                                       "OpenRLHF's remote reward model."},
    {"name": "rerank", "description": "Rank given candidates, or candidates the policy writes; public tests "
                                      "run in the sandbox."},
    {"name": "models", "description": "The loaded checkpoint."},
    {"name": "operations", "description": "Liveness, readiness and Prometheus metrics (no API key needed)."},
]
OPEN_OPERATIONS = frozenset({"/health", "/ready", "/metrics"})
SWAGGER_PARAMETERS: dict[str, Any] = {
    "displayRequestDuration": True, "persistAuthorization": True, "defaultModelsExpandDepth": 0,
    "docExpansion": "list", "validatorUrl": None,  # None: no badge image from validator.swagger.io
}
# The bundles hard-code a few remote images (ReDoc's sidebar logo from cdn.redoc.ly): the browser may fetch
# images and data from this server only. Scripts and styles stay unrestricted (both bundles inline them).
DOCS_CSP = "img-src 'self' data:; connect-src 'self'; font-src 'self' data:"


def assets_dir() -> Path:
    """The ``static`` folder of the installed ``fastapi-offline`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("the API docs need the 'fastapi-offline' package: pip install 'dreamprm-code[service]'")
    return Path(spec.origin).parent / "static"


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` from local assets, and enrich ``app.openapi()`` (create the app with
    ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = enrich_openapi(plain_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png", swagger_ui_parameters=SWAGGER_PARAMETERS)
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False)
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page


def tag_of(path: str) -> str:
    """The group of an operation: the first ``TAG_OF_PATH`` prefix that matches, else ``other``."""
    return next((tag for prefix, tag in TAG_OF_PATH if path.startswith(prefix)), "other")


def enrich_openapi(spec: dict[str, Any]) -> dict[str, Any]:
    """Tags, request examples and the optional bearer key, added in place to a FastAPI OpenAPI document."""
    spec["tags"] = TAGS
    spec.setdefault("components", {})["securitySchemes"] = {
        "apiKey": {"type": "http", "scheme": "bearer",
                   "description": "needed only when the server sets DREAMPRM_API_KEYS"}}
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            operation["tags"] = [tag_of(path)]
            if path not in OPEN_OPERATIONS:
                operation["security"] = [{"apiKey": []}, {}]  # {}: no key is also fine when none is configured
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and path in REQUEST_EXAMPLES:
                body["examples"] = REQUEST_EXAMPLES[path]
    return spec
