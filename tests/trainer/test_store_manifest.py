"""JSON Lines stores (append, dedupe, torn-line repair, kill -9 and concurrent writers), run manifests, configs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from trainer.config import (
    EvaluateConfig,
    ExecuteConfig,
    ExportConfig,
    FitConfig,
    GenerateConfig,
    LabelConfig,
    config_from_dict,
    config_to_dict,
)
from trainer.manifest import ConfigChangedError, RunManifest, progress, stage, start_run
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


def test_stage_writes_a_done_manifest(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"k": 1}\n')
    config = ExecuteConfig(workers=2)
    with stage(tmp_path / "out", "execute", config, [data]) as run:
        assert RunManifest.read(tmp_path / "out").status == "running"  # type: ignore[union-attr]
        run.count("executed", 3)
        run.count("executed")
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["stage"] == "execute" and manifest["status"] == "done"
    assert manifest["config"] == config_to_dict(config) == {"workers": 2, "wall_s": 10.0, "memory_mb": 1024,
                                                            "stop_at_first_failure": False}
    assert manifest["inputs"] == [{"path": str(data.resolve()), "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
                                   "bytes": data.stat().st_size}]
    assert manifest["counts"] == {"executed": 4}
    assert manifest["code_version"] and manifest["host"]["pid"] == os.getpid()
    assert manifest["started_at"] <= manifest["finished_at"] and manifest["history"] == []


def test_stage_failure_is_recorded_and_reraised(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), stage(tmp_path, "label", LabelConfig()):
        raise RuntimeError("boom")
    manifest = RunManifest.read(tmp_path)
    assert manifest is not None and manifest.status == "failed" and manifest.error == "RuntimeError: boom"


def test_resume_appends_to_history(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), stage(tmp_path, "label", LabelConfig(workers=1)):
        raise KeyboardInterrupt
    with stage(tmp_path, "label", LabelConfig(workers=4)) as run:  # workers is resume-safe
        run.count("labels", 5)
    with stage(tmp_path, "label", LabelConfig(workers=4)):
        pass
    manifest = RunManifest.read(tmp_path)
    assert manifest is not None and manifest.status == "done" and manifest.counts == {}
    assert [(a.status, a.counts, a.config["workers"]) for a in manifest.history] == [
        ("failed", {}, 1), ("done", {"labels": 5}, 4)]


def test_resume_after_a_kill_marks_the_unfinished_attempt(tmp_path: Path) -> None:
    start_run(tmp_path, "execute", ExecuteConfig())  # a stage killed before it could record its end
    with stage(tmp_path, "execute", ExecuteConfig()):
        pass
    manifest = RunManifest.read(tmp_path)
    assert manifest is not None and manifest.status == "done"
    assert [(a.status, a.error) for a in manifest.history] == [("failed", "did not finish (killed, or still running "
                                                                          "elsewhere)")]


def test_resume_with_another_config_is_refused(tmp_path: Path) -> None:
    with stage(tmp_path, "label", LabelConfig(rollouts=8)):
        pass
    with pytest.raises(ConfigChangedError, match="rollouts: 8 -> 4"), stage(tmp_path, "label", LabelConfig(rollouts=4)):
        pass
    with pytest.raises(ValueError, match="outputs of stage 'label'"), stage(tmp_path, "execute", ExecuteConfig()):
        pass
    with stage(tmp_path, "label", LabelConfig(rollouts=4), allow_config_change=True):
        pass
    manifest = RunManifest.read(tmp_path)
    assert manifest is not None and manifest.config["rollouts"] == 4 and len(manifest.history) == 1


def test_stage_accepts_a_mapping_of_configs(tmp_path: Path) -> None:
    config = {"fit": FitConfig(model="m"), "label": LabelConfig(workers=1)}
    with stage(tmp_path, "correct", config):
        pass
    manifest = RunManifest.read(tmp_path)
    assert manifest is not None and manifest.config["fit"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    with stage(tmp_path, "correct", {**config, "label": LabelConfig(workers=8)}):  # label.workers is resume-safe
        pass
    with pytest.raises(ConfigChangedError, match=r"fit\.lr: 0\.0001 -> 0\.001"), \
            stage(tmp_path, "correct", {**config, "fit": FitConfig(model="m", lr=1e-3)}):
        pass


def test_manifest_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with stage(tmp_path, "export", ExportConfig()):
        pass
    before = (tmp_path / "run.json").read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("crash during replace")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="crash"), stage(tmp_path, "export", ExportConfig()):
        pass
    monkeypatch.undo()
    assert (tmp_path / "run.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # no temp file left


def test_progress_is_a_bar_on_a_tty_and_log_lines_otherwise(capsys: pytest.CaptureFixture[str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="trainer.manifest"):
        assert list(progress(range(3), total=3, desc="quiet")) == [0, 1, 2]
        assert capsys.readouterr().err == "" and not caplog.records  # faster than one log interval
        assert list(progress(range(3), total=3, desc="logged", log_every_s=0)) == [0, 1, 2]
        assert [r.getMessage().split(",")[0] for r in caplog.records] == [f"logged: {i}/3 done" for i in (1, 2, 3)]
        assert "min left" in caplog.records[0].getMessage()
    assert list(progress(iter(range(3)), total=3, desc="forced", force=True)) == [0, 1, 2]
    assert "forced" in capsys.readouterr().err


CONFIGS = [GenerateConfig(model="m", base_url="http://localhost:8000/v1"), ExecuteConfig(), LabelConfig(),
           FitConfig(model="m"), ExportConfig(), EvaluateConfig()]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_config_round_trips_through_json(config: object) -> None:
    data = json.loads(json.dumps(config_to_dict(config)))
    assert config_from_dict(type(config), data) == config
    fields = dataclasses.fields(config)  # type: ignore[arg-type]
    assert all(f.metadata.get("help") for f in fields), f"{type(config).__name__}: a field has no help"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, fields[0].name, None)


def test_config_from_dict_rejects_unknown_and_bad_values() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'temprature' \(did you mean 'temperature'\?\)"):
        config_from_dict(LabelConfig, {"temprature": 0.5})
    with pytest.raises(ValueError, match="backend"):
        config_from_dict(GenerateConfig, {"model": "m", "backend": "tgi"})
    with pytest.raises(ValueError, match="lora and full_finetune are exclusive"):
        config_from_dict(FitConfig, {"model": "m", "full_finetune": True})
    with pytest.raises(ValueError, match="model"):
        config_from_dict(FitConfig, {})
    fit = config_from_dict(FitConfig, {"model": "m", "target_modules": ["q_proj"], "lr": "3e-4"})
    assert fit.target_modules == ("q_proj",) and fit.lr == 3e-4


def test_resume_after_a_new_config_field_at_its_default(tmp_path: Path) -> None:
    """A run started by older code lacks fields added since: they ran as their defaults."""
    with stage(tmp_path, "label", LabelConfig(rollouts=4)):
        pass
    manifest = json.loads((tmp_path / "run.json").read_text())
    del manifest["config"]["reference_rollouts"]  # as written before the field existed
    (tmp_path / "run.json").write_text(json.dumps(manifest))
    with stage(tmp_path, "label", LabelConfig(rollouts=4)):
        pass
    with pytest.raises(ConfigChangedError, match="reference_rollouts: 0 -> 2"), \
            stage(tmp_path, "label", LabelConfig(rollouts=4, reference_rollouts=2)):
        pass
