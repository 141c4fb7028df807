"""Pure ASGI middleware: request ids, API-key auth, request-size limit, metrics and access log.

Written against the ASGI spec directly (no starlette import), so it stays small and testable.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from service.errors import InputTooLong, PRMError, Unauthorized
from service.metrics import Metrics

logger = logging.getLogger("service.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# pages and their assets are open: they hold no data, and the playground sends the key with its API calls
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/docs", "/redoc", "/openapi.json", "/"})
OPEN_PREFIXES = ("/static/",)
_RID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, api_keys: Iterable[str], max_request_bytes: int,
                 metrics: Metrics, routes: Iterable[str]) -> None:
        self.app = app
        self.api_keys = [k.encode() for k in api_keys]
        self.max_bytes = max_request_bytes
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        rid = given if _RID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        path = scope["path"]
        route = path if path in self.routes else "other"
        status = 500
        started = time.perf_counter()

        async def send_wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            error = self._check_auth(path, headers)
            if error is None:
                body, error = await self._read_body(headers, receive)
            if error is not None:
                await _send_error(send_wrapped, error, rid)
            else:
                await self.app(scope, _replay(body, receive), send_wrapped)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            logger.info("%s %s %s %d %.1fms", rid, scope["method"], path, status, seconds * 1000)

    def _check_auth(self, path: str, headers: dict[str, str]) -> PRMError | None:
        if not self.api_keys or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        ok = False
        for key in self.api_keys:  # compare with every key: time does not depend on which matched
            ok |= hmac.compare_digest(given, key)
        if scheme.lower() == "bearer" and ok:
            return None
        return Unauthorized("missing or invalid API key (send 'Authorization: Bearer <key>')")

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> tuple[bytes, PRMError | None]:
        too_long = InputTooLong(f"request body exceeds {self.max_bytes} bytes")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return b"", too_long
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return b"", too_long
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def error_body(exc: PRMError, request_id: str | None) -> bytes:
    return json.dumps({"error": {"type": exc.type, "message": exc.message, "request_id": request_id}}).encode()


async def _send_error(send: Send, exc: PRMError, rid: str) -> None:
    body = error_body(exc, rid)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status_code == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
