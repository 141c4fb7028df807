"""``python -m service.cli.healthcheck``: exit 0 when this host's service answers ``/ready`` with 200.

The container health check: it reads the port from the same settings as the server (``DREAMPRM_PORT``),
so a container started on another port stays healthy. Stdlib and settings only.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from service.settings import Settings


def probe(port: int, *, timeout_s: float = 3.0) -> bool:
    """Whether ``http://127.0.0.1:<port>/ready`` answers 200 within ``timeout_s``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main() -> None:
    sys.exit(0 if probe(Settings().port) else 1)


if __name__ == "__main__":
    main()
