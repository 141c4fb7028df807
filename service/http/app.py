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

from service.errors import InvalidInput, InvalidJSON, MethodNotAllowed, NotFound, PRMError, validation_failed
from service.http.middleware import RequestContextMiddleware, error_body, error_headers
from service.http.routes import router
from service.http.web.docs import install_docs
from service.http.web.playground import install_playground
from service.policy import Policy
from service.sandbox import isolation
from service.serving.engine import ScoringEngine
from service.serving.metrics import Metrics
from service.serving.rerank import Reranker, policy_factory
from service.settings import Settings

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

    async def probe_sandbox(app: FastAPI) -> None:
        """Which isolation the sandbox has here (a short real run, off the event loop), for /ready and /metrics."""
        level = await asyncio.to_thread(isolation)
        app.state.sandbox_isolation = level
        metrics.sandbox_isolation.labels(level=level).set(1)
        if level != "full":
            logger.error("sandbox isolation is %r, not 'full': see SECURITY.md", level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine, app.state.load_error, app.state.metrics = None, None, metrics
        app.state.reranker, app.state.sandbox_isolation = None, None
        task, probe = None, asyncio.create_task(probe_sandbox(app))
        if engine is not None:
            await engine.open()
            app.state.engine = engine
            app.state.reranker = Reranker(engine, settings, policy=policy, factory=factory)
        else:
            task = asyncio.create_task(load(app))
        try:
            yield
        finally:
            probe.cancel()
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
                       max_request_bytes=settings.max_request_bytes, metrics=metrics, routes=routes,
                       body_timeout_s=settings.http_body_timeout_s, max_json_depth=settings.max_json_depth)
    return app


def _rid(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _json(exc: PRMError, request: Request, status: int | None = None,
          extra: dict[str, str] | None = None) -> Response:
    headers = {k.decode(): v.decode() for k, v in error_headers(exc)} | (extra or {})
    return Response(error_body(exc, _rid(request)), status_code=status or exc.status_code,
                    headers=headers, media_type="application/json")


async def _handle_prm_error(request: Request, exc: PRMError) -> Response:
    return _json(exc, request)


async def _handle_validation(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _json(InvalidJSON("request body is not valid JSON"), request)
    if "json" not in request.headers.get("content-type", "json"):
        return _json(InvalidInput("send the body as JSON with 'Content-Type: application/json'"), request)
    return _json(validation_failed(errors), request)


async def _handle_http(request: Request, exc: StarletteHTTPException) -> Response:
    known = {404: NotFound, 405: MethodNotAllowed}.get(exc.status_code)
    err = (known or (InvalidInput if exc.status_code < 500 else PRMError))(str(exc.detail))
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        err = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path[:200]}; use {allow}")
    return _json(err, request, status=exc.status_code, extra=dict(exc.headers or {}))


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unexpected error in request %s", _rid(request), exc_info=exc)
    return _json(PRMError("internal error; see the server log for this request id"), request)
