"""service.serving.heap: the trimmer runs at most once per period, never when disabled, and really trims on glibc."""

from __future__ import annotations

import sys

import pytest

from service.serving.heap import HeapTrimmer


def test_trims_at_most_once_per_period() -> None:
    now = [100.0]
    trimmer = HeapTrimmer(10.0, clock=lambda: now[0])
    calls = []
    trimmer._trim = lambda pad: calls.append(pad) or 1  # type: ignore[assignment]
    assert trimmer() is False  # not due yet
    now[0] = 110.0
    assert trimmer() is True and trimmer() is False
    now[0] = 125.0
    assert trimmer() is True
    assert calls == [0, 0] and trimmer.trims == 2


def test_zero_disables() -> None:
    trimmer = HeapTrimmer(0.0, clock=lambda: 1e9)
    assert trimmer() is False and trimmer.trims == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_malloc_trim_is_found_and_runs() -> None:
    now = [0.0]
    trimmer = HeapTrimmer(1.0, clock=lambda: now[0])
    now[0] = 2.0
    assert trimmer() is True  # the real malloc_trim(0) of this process
