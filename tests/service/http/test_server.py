"""The transport edge on a real socket (uvicorn in a thread, a fake model): slow heads and bodies are
dropped within the configured time, the connection cap, and uvicorn's own answers in the error shape."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from service.http.app import create_app
from service.http.server import uvicorn_config
from service.serving.engine import ScoringEngine
from service.settings import Settings
from tests.fakes import FakeModel


@contextmanager
def running(settings: Settings) -> Iterator[tuple[str, int]]:
    """Serve the app with ``settings`` on a free loopback port; yield (host, port)."""
    settings = settings.model_copy(update={"port": 0, "host": "127.0.0.1"})
    server = uvicorn.Server(uvicorn_config(create_app(settings, engine=ScoringEngine(FakeModel(), settings)),
                                           settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(15)


def read_response(sock: socket.socket, timeout_s: float) -> tuple[bytes, float]:
    """Everything the server writes until it closes the connection, and how long that took."""
    sock.settimeout(timeout_s)
    start = time.monotonic()
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


def parse(raw: bytes) -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def assert_error_shape(raw: bytes, status: int, etype: str) -> dict[str, str]:
    code, headers, body = parse(raw)
    assert code == status, raw[:300]
    assert body["error"]["type"] == etype and body["error"]["message"]
    assert body["error"]["request_id"] == headers["x-request-id"]
    assert headers["content-type"] == "application/json"
    return headers


@pytest.fixture
def edge(settings: Settings) -> Settings:
    return settings.model_copy(update={"http_header_timeout_s": 1.0, "http_body_timeout_s": 1.0,
                                       "http_max_connections": 8})


def test_default_timeouts_are_bounded() -> None:
    s = Settings()
    assert 0 < s.http_header_timeout_s <= 30 and 0 < s.http_body_timeout_s <= 60 and s.http_max_connections > 0


def test_slow_header_client_is_dropped_within_the_timeout(edge: Settings) -> None:
    """The audit's slowloris: one header line every 0.3 s is answered 408 and closed at ~1 s."""
    with running(edge) as addr, socket.create_connection(addr) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /v1/split HTTP/1.1\r\nHost: x\r\n")
        raw = b""
        for i in range(20):  # would take 6 s
            time.sleep(0.3)
            try:
                sock.sendall(f"X-Slow-{i}: 1\r\n".encode())
            except OSError:
                break
        raw, _ = read_response(sock, 5)
        elapsed = time.monotonic() - start
    assert elapsed < 1.0 + 1.0, elapsed
    assert_error_shape(raw, 408, "request_timeout")


def test_idle_connection_is_dropped(edge: Settings) -> None:
    with running(edge) as addr, socket.create_connection(addr) as sock:
        raw, elapsed = read_response(sock, 5)
    assert elapsed < 2.0
    assert_error_shape(raw, 408, "request_timeout")


def test_slow_body_is_dropped(edge: Settings) -> None:
    with running(edge) as addr, socket.create_connection(addr) as sock:
        sock.sendall(b"POST /v1/split HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"code\": ")
        raw, elapsed = read_response(sock, 5)
    assert elapsed < 2.0
    assert_error_shape(raw, 408, "request_timeout")


def test_keep_alive_requests_are_not_cut_by_the_head_deadline(edge: Settings) -> None:
    with running(edge) as (host, port), httpx.Client(base_url=f"http://{host}:{port}") as client:
        for _ in range(3):  # one connection; each request's head starts its own clock
            r = client.post("/v1/split", json={"code": "def f():\n    return 1\n"})
            assert r.status_code == 200 and r.headers["x-request-id"]
            time.sleep(0.6)


def test_connection_limit_answers_503_in_the_error_shape(edge: Settings) -> None:
    limited = edge.model_copy(update={"http_max_connections": 2, "http_header_timeout_s": 5.0})
    with running(limited) as addr:
        held = [socket.create_connection(addr) for _ in range(2)]
        time.sleep(0.2)
        with socket.create_connection(addr) as third:
            raw, _ = read_response(third, 5)
        headers = assert_error_shape(raw, 503, "overloaded")
        assert int(headers["retry-after"]) >= 1
        for s in held:
            s.close()
        time.sleep(0.2)
        with httpx.Client() as client:  # the slots are free again
            assert client.get(f"http://{addr[0]}:{addr[1]}/health").status_code == 200


def test_malformed_request_and_huge_head_get_the_error_shape(edge: Settings) -> None:
    with running(edge) as addr:
        with socket.create_connection(addr) as sock:
            sock.sendall(b"GARBAGE\x00 / HTTP/1.1\r\n\r\n")
            assert_error_shape(read_response(sock, 5)[0], 400, "invalid_input")
        with socket.create_connection(addr) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
            assert_error_shape(read_response(sock, 5)[0], 431, "input_too_long")


def test_many_slowloris_connections_are_all_dropped(edge: Settings) -> None:
    """The audit held 300 such connections for 20 s+; here 50 are all gone at the deadline, and the
    server still answers."""
    roomy = edge.model_copy(update={"http_max_connections": 100})
    with running(roomy) as addr:
        socks = [socket.create_connection(addr) for _ in range(50)]
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\n")
        start = time.monotonic()
        for s in socks:
            raw, _ = read_response(s, 5)
            assert parse(raw)[0] == 408
            s.close()
        assert time.monotonic() - start < 2.5
        with httpx.Client() as client:
            assert client.get(f"http://{addr[0]}:{addr[1]}/ready").status_code == 200
