from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.http.app import create_app
from service.serving.engine import ScoringEngine
from service.settings import Settings
from tests.fakes import FakeModel

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DREAMPRM_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(name: str) -> Path:
    """A file of ../shared/data; missing data skips locally and fails in CI."""
    path = DATA / name
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing")
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(checkpoint=tmp_path, max_wait_ms=1.0, policy="none")


@pytest.fixture
def fake_model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def engine(fake_model: FakeModel, settings: Settings) -> ScoringEngine:
    return ScoringEngine(fake_model, settings)


@pytest.fixture
def client(settings: Settings, engine: ScoringEngine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine=engine)) as c:
        yield c


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import save_tiny_prm

    return save_tiny_prm(tmp_path_factory.mktemp("ckpt") / "tiny-prm")


@pytest.fixture(scope="session")
def tiny_hf_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint written by ``python -m trainer export … --format hf`` (a token classifier)."""
    from typer.testing import CliRunner

    from trainer.__main__ import app as trainer_cli

    out = tmp_path_factory.mktemp("hf") / "tiny-prm-hf"
    result = CliRunner().invoke(trainer_cli, ["export", str(tiny_checkpoint), str(out), "--format", "hf"])
    assert result.exit_code == 0, result.output
    return out
