"""service.cli.healthcheck: the container probe asks /ready on the port the settings name."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from service.cli import healthcheck
from tests.service.redis_server import free_port


class _Handler(http.server.BaseHTTPRequestHandler):
    ready = True

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ready" and self.ready else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_probe_is_true_only_for_a_ready_server(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert healthcheck.probe(port)
    monkeypatch.setattr(_Handler, "ready", False)
    assert not healthcheck.probe(port)
    assert not healthcheck.probe(free_port(), timeout_s=1)


def test_main_probes_dreamprm_port(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAMPRM_PORT", str(port))
    with pytest.raises(SystemExit) as ok:
        healthcheck.main()
    assert ok.value.code == 0
    monkeypatch.setenv("DREAMPRM_PORT", str(free_port()))
    with pytest.raises(SystemExit) as down:
        healthcheck.main()
    assert down.value.code == 1
