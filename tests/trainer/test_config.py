"""Stage configs: JSON round trip, help on every field, validation with hints, the policy they name, --help."""

from __future__ import annotations

import dataclasses
import json

import pytest

from trainer.config import (
    EvaluateConfig,
    ExecuteConfig,
    ExportConfig,
    FitConfig,
    GenerateConfig,
    LabelConfig,
    config_from_dict,
    config_to_dict,
    settings_help,
)

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


def test_generate_names_its_policy() -> None:
    config = GenerateConfig(model="Qwen/Qwen2.5-Coder-1.5B", backend="openai", base_url="http://vllm:8000/v1",
                            timeout_s=30.0, retries=1, concurrency=4)
    spec = config.policy_spec()
    assert (spec.backend, spec.model, spec.base_url) == ("openai", "Qwen/Qwen2.5-Coder-1.5B", "http://vllm:8000/v1")
    assert (spec.timeout_s, spec.retries, spec.concurrency) == (30.0, 1, 4)


def test_settings_help_names_every_field_with_its_default() -> None:
    text = settings_help(LabelConfig, "label")
    for f in dataclasses.fields(LabelConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        assert f"label.{f.name}: {f.metadata['help']} (default {default!r}" in text
    assert "fit.model: " in settings_help(FitConfig, "fit") and "(required)" in settings_help(FitConfig, "fit")
