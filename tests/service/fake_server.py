"""``python -m tests.service.fake_server PORT``: the real app and transport over the fake model, for tests
that need the server in its own process (latency under load)."""

from __future__ import annotations

import sys

from service.http.app import create_app
from service.http.server import serve
from service.serving.engine import ScoringEngine
from service.settings import Settings
from tests.fakes import FakeModel


def main(port: int) -> None:
    settings = Settings(port=port, max_wait_ms=1.0, policy="none")
    serve(create_app(settings, engine=ScoringEngine(FakeModel(), settings)), settings)


if __name__ == "__main__":
    main(int(sys.argv[1]))
