"""The HTTP transport: uvicorn's h11 protocol with a request-head deadline, a connection cap, and the
service's error shape (with ``x-request-id``) on the answers uvicorn gives before the app is reached.

The app-level edge (body timeout, body checks, auth, limits) is ``service.http.middleware``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.errors import InputTooLong, InvalidInput, Overloaded, PRMError, RequestTimeout
from service.settings import Settings

logger = logging.getLogger("service.access")

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


class GuardedH11Protocol(H11Protocol):
    """One connection. Adds to uvicorn's h11 protocol:

    - a **head deadline**: the request line and headers of each request must arrive within
      ``header_timeout_s`` of the connection opening (or of the first byte of the next keep-alive
      request); otherwise 408 and close (slowloris: one header line a second is no longer held open);
    - a **connection cap**: past ``max_connections`` open connections a new one gets 503 with
      ``Retry-After`` and is closed before anything is read;
    - malformed requests (and heads over ``h11_max_incomplete_event_size``) get a JSON 400 with a fresh
      ``x-request-id`` instead of uvicorn's plain-text body.
    """

    header_timeout_s: float = 10.0
    max_connections: int = 512
    max_header_bytes: int = 16384
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning("connection limit (%d) reached: refusing %s", self.max_connections, self.client)
            self._reject(Overloaded(f"too many open connections (limit {self.max_connections}); retry later",
                                    retry_after=1.0))
            return
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            self._cancel_head_timer()  # h11 checks its limit only on heads still incomplete: check them all
            self._reject(HeadTooLarge(f"request head exceeds {self.max_header_bytes} bytes"))
            return
        super().data_received(data)
        if self.transport.is_closing():
            self._cancel_head_timer()
        elif self.conn.their_state is h11.IDLE:  # a head is still arriving: keep (or start) its clock
            if self._head_timer is None:
                self._arm_head_timer()
        else:
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._cancel_head_timer()
        if len(self.conn.trailing_data[0]) > self.max_header_bytes:
            self._reject(HeadTooLarge(f"request head exceeds {self.max_header_bytes} bytes"))
        else:
            self._reject(InvalidInput("malformed HTTP/1.1 request"))

    # --- helpers ------------------------------------------------------------------------------

    def _head_too_large(self, data: bytes) -> bool:
        buffered = self.conn.trailing_data[0] + data if self.conn.trailing_data[0] else data
        end = buffered.find(b"\r\n\r\n", 0, self.max_header_bytes + 4)
        return (len(buffered) if end < 0 else end) > self.max_header_bytes

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.our_state is not h11.IDLE:  # a response is being written: leave it to uvicorn
            return
        logger.info("request head not received within %.1f s from %s: closing", self.header_timeout_s, self.client)
        self._reject(RequestTimeout(f"request head not received within {self.header_timeout_s:g} s"))

    def _reject(self, exc: PRMError) -> None:
        """Write ``exc`` as a complete HTTP/1.1 response in the error shape, then close the connection."""
        self.transport.write(error_response_bytes(exc))
        self.transport.close()


class HeadTooLarge(InputTooLong):
    """RFC 6585's 431: the request line and headers are over the limit."""

    status_code = 431


def error_response_bytes(exc: PRMError) -> bytes:
    """A raw ``Connection: close`` response for ``exc`` with a new request id (no request was parsed)."""
    rid = uuid.uuid4().hex
    body = json.dumps({"error": {"type": exc.type, "message": exc.message, "request_id": rid}}).encode()
    lines = [f"HTTP/1.1 {exc.status_code} {_REASONS.get(exc.status_code, 'Error')}",
             "content-type: application/json", f"content-length: {len(body)}", "connection: close",
             f"x-request-id: {rid}"]
    if exc.retry_after is not None:
        lines.append(f"retry-after: {max(1, round(exc.retry_after))}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def protocol_for(settings: Settings) -> type[GuardedH11Protocol]:
    """``GuardedH11Protocol`` with this server's limits (uvicorn builds one instance per connection)."""
    return type("ServiceH11Protocol", (GuardedH11Protocol,),
                {"header_timeout_s": settings.http_header_timeout_s,
                 "max_connections": settings.http_max_connections,
                 "max_header_bytes": settings.http_max_header_bytes})


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of ``dreamprm serve``: one worker, our protocol, the documented limits."""
    return uvicorn.Config(app, host=settings.host, port=settings.port, workers=1, log_config=None,
                          access_log=False, timeout_graceful_shutdown=10, http=protocol_for(settings),
                          timeout_keep_alive=settings.http_keep_alive_s,  # type: ignore[arg-type]  # a float works
                          h11_max_incomplete_event_size=settings.http_max_header_bytes)


def serve(app: Any, settings: Settings) -> None:
    """Run ``app`` until SIGINT/SIGTERM."""
    uvicorn.Server(uvicorn_config(app, settings)).run()
