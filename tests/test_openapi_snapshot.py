"""The HTTP contract is committed: any change to it shows up as a diff of the snapshot.

Regenerate after an intended change: ``UPDATE_SNAPSHOTS=1 pytest tests/test_openapi_snapshot.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from service.http.app import create_app
from service.settings import Settings

SNAPSHOT = Path(__file__).parent / "snapshots" / "openapi.json"


def test_openapi_matches_snapshot() -> None:
    spec = create_app(Settings()).openapi()
    spec["info"]["version"] = "snapshot"  # the package version is not part of the contract
    text = json.dumps(spec, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.read_text() == text, "API changed: review and regenerate with UPDATE_SNAPSHOTS=1"
