"""Stage manifests: done, failed and resumed attempts, changed configs, atomic writes, progress."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from trainer.config import (
    ExecuteConfig,
    ExportConfig,
    FitConfig,
    LabelConfig,
    config_to_dict,
)
from trainer.manifest import (
    ConfigChangedError,
    RunManifest,
    progress,
    stage,
    stage_seconds,
    start_run,
    untimed_attempts,
)


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
    assert untimed_attempts(tmp_path) == 1  # the model card says so beside the time of the attempt that ended
    assert stage_seconds(tmp_path) == (manifest.finished_at - manifest.started_at).total_seconds()  # type: ignore


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
