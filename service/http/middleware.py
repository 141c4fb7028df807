"""Pure ASGI middleware: request ids, API-key auth, request-size limit, the body guard (read timeout,
encoding, JSON checks of ``service.http.json_guard``), a last-resort 500 in the error shape, metrics and access log.

Written against the ASGI spec directly (no starlette import), so it stays small and testable.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from service.errors import InputTooLong, PRMError, RequestTimeout, Unauthorized, UnsupportedMediaType
from service.http.json_guard import check_json_body
from service.serving.metrics import Metrics

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
    """Outermost app middleware: every response it lets through, error or not, carries ``x-request-id``.

    ``body_timeout_s`` bounds the time from the request head to the last body byte (a slow body is
    answered 408 and the connection closed); a JSON body must pass ``check_json_body`` (400 with a precise
    type); an unexpected exception becomes a 500 in the error shape, logged with the request id.
    """

    def __init__(self, app: ASGIApp, *, api_keys: Iterable[str], max_request_bytes: int,
                 metrics: Metrics, routes: Iterable[str], body_timeout_s: float = 30.0,
                 max_json_depth: int = 32) -> None:
        self.app = app
        self.api_keys = [k.encode() for k in api_keys]
        self.max_bytes = max_request_bytes
        self.metrics = metrics
        self.routes = frozenset(routes)
        self.body_timeout_s = body_timeout_s
        self.max_json_depth = max_json_depth

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
        started = False
        t0 = time.perf_counter()

        async def send_wrapped(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            error = self._check_auth(path, headers) or _check_encoding(headers)
            if error is None:
                body, error = await self._read_body(headers, receive)
            if error is None and body and _is_json(headers):
                error = _guard_json(body, self.max_json_depth)
            if error is not None:
                await _send_error(send_wrapped, error, rid)
            else:
                try:
                    await self.app(scope, _replay(body, receive), send_wrapped)
                except Exception as exc:
                    if started:
                        raise  # the response is on its way: nothing better to do than to drop the connection
                    logger.error("unexpected error in request %s", rid, exc_info=exc)
                    await _send_error(send_wrapped, PRMError("internal error; see the server log for this "
                                                             "request id"), rid)
        finally:
            seconds = time.perf_counter() - t0
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
        try:
            async with asyncio.timeout(self.body_timeout_s):
                return await self._receive_all(receive, too_long)
        except TimeoutError:
            return b"", RequestTimeout(f"request body not received within {self.body_timeout_s:g} s")

    async def _receive_all(self, receive: Receive, too_long: PRMError) -> tuple[bytes, PRMError | None]:
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


def error_headers(exc: PRMError) -> list[tuple[bytes, bytes]]:
    """The headers an error status asks for (RFC 9110): who to authenticate as, when to retry, what to send."""
    headers = []
    if exc.status_code == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    if exc.status_code == 415:
        headers.append((b"accept-encoding", b"identity"))
    if exc.status_code in (408, 413):  # the rest of the body may still be arriving: do not read it
        headers.append((b"connection", b"close"))
    return headers


async def _send_error(send: Send, exc: PRMError, rid: str) -> None:
    body = error_body(exc, rid)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *error_headers(exc)]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _check_encoding(headers: dict[str, str]) -> PRMError | None:
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    return UnsupportedMediaType(f"Content-Encoding {encoding[:40]!r} is not accepted; send the body uncompressed")


def _is_json(headers: dict[str, str]) -> bool:
    """What FastAPI would parse as JSON: no content type, or application/json or */*+json."""
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    return not media or media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _guard_json(body: bytes, max_depth: int) -> PRMError | None:
    try:
        check_json_body(body, max_depth=max_depth)
    except PRMError as exc:
        return exc
    return None
