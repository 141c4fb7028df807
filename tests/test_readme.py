"""The README documents every setting (the configuration table cannot drift silently)."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [name for name in Settings.model_fields if f"DREAMPRM_{name.upper()}" not in README]
    assert not missing, f"README configuration table lacks {missing}"


def test_performance_table_is_generated_from_the_results() -> None:
    from benchmarks.perf_table import END, START, render

    block = README.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == render(), "README's performance table is stale: python -m benchmarks.perf_table --write"
