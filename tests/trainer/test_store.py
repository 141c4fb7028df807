"""JSON Lines stores: append, dedupe, torn-line repair, kill -9 and concurrent writers, atomic writes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from trainer.records import StepLabel
from trainer.store import JsonlStore

REPO = Path(__file__).resolve().parents[2]


class Rec(BaseModel):
    k: int
    text: str = ""


def open_store(path: Path) -> JsonlStore[Rec]:
    return JsonlStore(path, Rec, key=lambda r: r.k)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# A stage in miniature: append records n0..n1 (``batch`` per call), skipping the keys already present.
WORKER = """
import sys
from pydantic import BaseModel
from trainer.store import JsonlStore

class Rec(BaseModel):
    k: int
    text: str = ""

path, start, stop, batch, size = sys.argv[1], *map(int, sys.argv[2:])
store = JsonlStore(path, Rec, key=lambda r: r.k)
todo = [k for k in range(start, stop) if k not in store.keys()]
for i in range(0, len(todo), batch):
    store.append(Rec(k=k, text=str(k) * size) for k in todo[i:i + batch])
"""


def worker(path: Path, start: int, stop: int, batch: int = 1, size: int = 200) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(start), str(stop), str(batch), str(size)],
                            cwd=REPO, env=env, stderr=subprocess.PIPE)


def check_file(path: Path, expected: set[int]) -> None:
    """Every line is a whole record, no key repeats, and the keys are exactly ``expected``."""
    raw = lines(path)
    assert all(line.endswith(b"\n") for line in raw)
    records = [Rec.model_validate_json(line) for line in raw]
    keys = [r.k for r in records]
    assert len(keys) == len(set(keys)), "duplicate keys"
    assert set(keys) == expected
    assert all(r.text == str(r.k) * (len(r.text) // len(str(r.k))) for r in records)


def test_append_read_keys(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "recs.jsonl"
    store = open_store(path)
    assert store.keys() == set() and list(store.read()) == []
    assert store.append([Rec(k=1, text="a"), Rec(k=2, text="b\nc")]) == 2
    assert store.append(Rec(k=k) for k in [3]) == 1
    assert [r.k for r in store.read()] == [1, 2, 3]
    assert list(store.read())[1].text == "b\nc"
    assert store.keys() == {1, 2, 3}
    assert open_store(path).keys() == {1, 2, 3}  # a fresh store reads the file


def test_composite_keys_of_records(tmp_path: Path) -> None:
    store = JsonlStore(tmp_path / "labels.jsonl", StepLabel, key=lambda r: (r.problem_id, r.candidate_id, r.step_index))
    label = StepLabel(problem_id="p", candidate_id="c", step_index=0, mc_label=0.5, n_rollouts=8, n_pass=4,
                      final=False)
    assert store.append([label, label.model_copy(update={"step_index": 1})]) == 2
    assert store.keys() == {("p", "c", 0), ("p", "c", 1)}


def test_duplicate_keys_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "recs.jsonl"
    store = open_store(path)
    store.append([Rec(k=0), Rec(k=1, text="first")])
    assert store.append([Rec(k=1, text="second"), Rec(k=2, text="first"), Rec(k=2, text="second")]) == 1
    assert open_store(path).append([Rec(k=0), Rec(k=2)]) == 0  # another instance, same file
    assert [(r.k, r.text) for r in store.read()] == [(0, ""), (1, "first"), (2, "first")]
    assert len(lines(path)) == 3


def test_keys_see_appends_of_another_store(tmp_path: Path) -> None:
    a, b = open_store(tmp_path / "r.jsonl"), open_store(tmp_path / "r.jsonl")
    a.append([Rec(k=1)])
    assert b.keys() == {1}
    b.append([Rec(k=2)])
    assert a.keys() == {1, 2}
    assert a.append([Rec(k=2)]) == 0


def test_torn_last_line_is_repaired_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "recs.jsonl"
    path.write_bytes(b'{"k":1,"text":""}\n{"k":2,"text":""}\n{"k":3,"te')
    with caplog.at_level(logging.WARNING, logger="trainer.store"):
        store = open_store(path)
    assert "torn last line" in caplog.text
    assert path.read_bytes() == b'{"k":1,"text":""}\n{"k":2,"text":""}\n'
    assert store.keys() == {1, 2}
    store.append([Rec(k=3)])
    check_file(path, {1, 2, 3})


def test_torn_line_is_repaired_before_append_and_skipped_by_read(tmp_path: Path) -> None:
    path = tmp_path / "recs.jsonl"
    store = open_store(path)
    store.append([Rec(k=1)])
    with path.open("ab") as fh:  # another writer dies mid-line after this store was opened
        fh.write(b'{"k":2,"text":"xx')
    assert [r.k for r in store.read()] == [1]
    assert store.keys() == {1}
    store.append([Rec(k=3)])
    check_file(path, {1, 3})


def test_a_torn_only_line_empties_the_file(tmp_path: Path) -> None:
    path = tmp_path / "recs.jsonl"
    path.write_bytes(b'{"k":1,')
    assert open_store(path).keys() == set()
    assert path.read_bytes() == b""


def test_corrupt_complete_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "recs.jsonl"
    path.write_bytes(b'{"k":1}\nnot json\n')
    with pytest.raises(ValueError, match="invalid Rec record at byte 8"):
        open_store(path).keys()


def test_append_checks_the_record_type(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="expected Rec"):
        open_store(tmp_path / "r.jsonl").append([StepLabel(problem_id="p", candidate_id="c", step_index=0,
                                                           mc_label=1.0, n_rollouts=1, n_pass=1, final=True)])  # type: ignore[list-item]


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "recs.jsonl"
    store = open_store(path)
    store.append([Rec(k=1)])
    before = path.read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        store.append([Rec(k=2), Rec(k=3)])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert store.keys() == {1}
    assert store.append([Rec(k=2)]) == 1


def test_kill_9_then_resume(tmp_path: Path) -> None:
    """Real SIGKILLs mid-run lose no earlier record; rerunning completes the file with each key once."""
    path, n = tmp_path / "recs.jsonl", 2000
    for at_least in (50, 200, 400):  # kill three times, each once this many records are on disk
        proc = worker(path, 0, n)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not path.exists() or path.read_bytes().count(b"\n") < at_least):
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        written = open_store(path).keys()
        assert at_least <= len(written) < n, "the worker must be killed mid-run"
        assert written == set(range(len(written)))  # a prefix: nothing earlier was lost
    resumed = worker(path, 0, n, batch=100)  # finish in bigger calls: one fsync per call keeps the test quick
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err.decode()
    check_file(path, set(range(n)))


def test_concurrent_writers_do_not_interleave(tmp_path: Path) -> None:
    """Two processes append big overlapping batches at once: whole lines only, each key once."""
    path = tmp_path / "recs.jsonl"
    procs = [worker(path, 0, 600, batch=20, size=2000), worker(path, 400, 1000, batch=20, size=2000)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    check_file(path, set(range(1000)))
