"""The README documents every setting (the configuration table cannot drift silently)."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [name for name in Settings.model_fields if f"DREAMPRM_{name.upper()}" not in README]
    assert not missing, f"README configuration table lacks {missing}"
