"""Format detection from a directory's JSON files, and the refusals (each names what we accept)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.checkpoints.detect import FORMATS, detect_format
from service.errors import InvalidInput


def write(path: Path, name: str, value: object) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps(value))
    return path


@pytest.mark.parametrize(("config", "fmt"), [
    ({"architectures": ["LlamaForTokenClassification"], "num_labels": 2}, "token-classification"),
    ({"architectures": ["Qwen2ForTokenClassification"], "id2label": {"0": "a", "1": "b"}}, "token-classification"),
    ({"architectures": ["Qwen2ForProcessRewardModel"]}, "qwen2.5-math-prm"),
    ({"architectures": ["LlamaForSequenceClassification"], "num_labels": 1}, "orm"),
])
def test_formats_from_config(tmp_path: Path, config: dict[str, object], fmt: str) -> None:
    assert detect_format(write(tmp_path, "config.json", config)).format == fmt


def test_ours_and_sidecar(tmp_path: Path, tiny_checkpoint: Path) -> None:
    assert detect_format(tiny_checkpoint).format == "dreamprm"
    path = write(tmp_path, "config.json", {"architectures": ["LlamaForTokenClassification"], "num_labels": 2})
    write(path, "prm_template.json", {"step_separator": "\n\n"})
    assert detect_format(path).sidecar == {"step_separator": "\n\n"}


def test_adapters_name_their_base(tmp_path: Path) -> None:
    base = write(tmp_path / "base", "config.json", {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"})
    adapter = write(tmp_path / "adapter", "adapter_config.json", {"peft_type": "LORA", "task_type": "TOKEN_CLS",
                                                                  "base_model_name_or_path": str(base)})
    found = detect_format(adapter)
    assert found.format == "token-classification" and found.base == base and found.config["model_type"] == "qwen2"
    other = write(tmp_path / "other", "adapter_config.json", {"peft_type": "LORA", "task_type": "CAUSAL_LM",
                                                              "base_model_name_or_path": str(base)})
    with pytest.raises(InvalidInput, match="without a token-classification head"):
        detect_format(other)
    write(adapter, "adapter_config.json", {"peft_type": "LORA", "task_type": "TOKEN_CLS",
                                           "base_model_name_or_path": "org/not-here"})
    with pytest.raises(InvalidInput, match="DREAMPRM_BASE_MODEL"):
        detect_format(adapter)
    assert detect_format(adapter, base=base).base == base
    write(adapter, "adapter_config.json", {"peft_type": "LORA", "use_dora": True, "task_type": "TOKEN_CLS"})
    with pytest.raises(InvalidInput, match="DoRA"):
        detect_format(adapter, base=base)


@pytest.mark.parametrize(("files", "match"), [
    ({}, "not a checkpoint of a format we accept"),
    ({"config.json": {"architectures": ["BertForMaskedLM"]}}, "not a format we accept"),
    ({"config.json": {"architectures": ["LlamaForTokenClassification"], "num_labels": 3}}, "3 labels"),
    ({"config.json": {"architectures": ["LlamaForSequenceClassification"], "num_labels": 2}}, "2 labels"),
    ({"config.json": "not an object"}, "not a JSON object"),
])
def test_refusals(tmp_path: Path, files: dict[str, object], match: str) -> None:
    for name, value in files.items():
        write(tmp_path, name, value)
    with pytest.raises(InvalidInput, match=match) as info:
        detect_format(tmp_path)
    if "format we accept" in match:
        assert all(name in info.value.message for name in FORMATS)


def test_pickles_are_refused_with_the_way_out(tmp_path: Path) -> None:
    (tmp_path / "reward_model_step_50.pt").write_bytes(b"")
    with pytest.raises(InvalidInput, match="dreamprm convert"):
        detect_format(tmp_path)
    with pytest.raises(InvalidInput, match="not a directory"):
        detect_format(tmp_path / "reward_model_step_50.pt")
