"""FastAPI application factory: lifespan, error table, middleware. No torch, no module-level app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.engine import ScoringEngine
from service.errors import InvalidInput, NotFound, PRMError, ValidationFailed
from service.http_middleware import RequestContextMiddleware, error_body
from service.metrics import Metrics
from service.policy import Policy
from service.rerank import Reranker, policy_factory
from service.routes import router
from service.settings import Settings
from service.web.docs import install_docs
from service.web.playground import install_playground

logger = logging.getLogger(__name__)


def _version() -> str:
    try:
        return version("dreamprm-code")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings, *, engine: ScoringEngine | None = None, policy: Policy | None = None) -> FastAPI:
    """The service. Without ``engine`` the checkpoint of ``settings`` loads in the background:
    ``/health`` answers at once, ``/ready`` turns true after the warm-up forward pass. Without
    ``policy`` the rerank policy comes from ``settings`` (made on the first rerank that needs it)."""
    metrics = engine.metrics if engine else Metrics()
    factory = None if policy is not None else policy_factory(settings)

    async def load(app: FastAPI) -> None:
        try:
            app.state.engine = await ScoringEngine.start(settings, metrics=metrics)
            app.state.reranker = Reranker(app.state.engine, settings, policy=policy, factory=factory)
            logger.info("ready: %s", app.state.engine.model.name)
        except Exception as exc:
            logger.exception("loading the model failed")
            app.state.load_error = f"loading the model failed: {exc}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine, app.state.load_error, app.state.metrics = None, None, metrics
        app.state.reranker = None
        task = None
        if engine is not None:
            await engine.open()
            app.state.engine = engine
            app.state.reranker = Reranker(engine, settings, policy=policy, factory=factory)
        else:
            task = asyncio.create_task(load(app))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            if app.state.reranker is not None:
                await app.state.reranker.aclose()
            if app.state.engine is not None:
                await app.state.engine.aclose()

    app = FastAPI(title="DreamPRM-Code", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Process reward model for code: function-as-step scores over HTTP. "
                              "A playground is at `/`.")
    app.include_router(router)
    install_docs(app)  # /docs and /redoc from local assets; tags and request examples
    install_playground(app)  # the page at /
    app.add_exception_handler(PRMError, _handle_prm_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _handle_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _handle_http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _handle_unexpected)
    routes = {getattr(r, "path", "") for r in router.routes} | {"/", "/docs", "/redoc", "/openapi.json"}
    app.add_middleware(RequestContextMiddleware, api_keys=[k.get_secret_value() for k in settings.api_keys],
                       max_request_bytes=settings.max_request_bytes, metrics=metrics, routes=routes)
    return app


def _rid(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _json(exc: PRMError, request: Request, status: int | None = None) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return Response(error_body(exc, _rid(request)), status_code=status or exc.status_code,
                    headers=headers, media_type="application/json")


async def _handle_prm_error(request: Request, exc: PRMError) -> Response:
    return _json(exc, request)


async def _handle_validation(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _json(InvalidInput("request body is not valid JSON"), request)
    if "json" not in request.headers.get("content-type", "json"):
        return _json(InvalidInput("send the body as JSON with 'Content-Type: application/json'"), request)
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return _json(ValidationFailed("; ".join(parts) + more), request)


async def _handle_http(request: Request, exc: StarletteHTTPException) -> Response:
    err = NotFound(str(exc.detail)) if exc.status_code == 404 else PRMError(str(exc.detail))
    return _json(err, request, status=exc.status_code)


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unexpected error in request %s", _rid(request), exc_info=exc)
    return _json(PRMError("internal error; see the server log for this request id"), request)
