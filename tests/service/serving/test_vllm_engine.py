"""The vllm scoring engine (``DREAMPRM_ENGINE=vllm``) against a fake vLLM pooling server that computes its rows
with the torch scorer of the same export: same scores and truncation as the torch engine, STEP and ALL pooling,
errors (503 + Retry-After when the engine is down, 502 when it answers nonsense), /ready following its health,
and no torch in the process. The real vLLM server: tests/service/serving/test_vllm_engine_live.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from service.checkpoints.load import load_scorer
from service.errors import EngineError, InvalidInput, ModelNotReady
from service.http.app import create_app
from service.serving import engine as engine_module
from service.serving.engine import ScoringEngine
from service.serving.vllm_scorer import FileTokenizer, VLLMScorer
from service.settings import Settings
from tests.live import wait_ready
from tests.service.checkpoints.test_formats import CODES, PROBLEM

URL = "http://vllm.test"


class FakeVLLM:
    """A vLLM pooling server in a test: ``/v1/models``, ``/health`` and ``/pooling`` (token_classify, raw
    logits), its rows computed by the torch scorer of the same directory: label 0 at 0, label 1 at our logit."""

    def __init__(self, path: Path, *, pooling: str = "STEP", max_model_len: int = 2048) -> None:
        self.torch = load_scorer(path, device="cpu", dtype="float32")
        self.sep = self.torch.tokenizer.convert_tokens_to_ids("<|step|>")
        self.pooling, self.max_model_len = pooling, max_model_len
        self.up, self.requests = True, []  # type: ignore[var-annotated]
        self.reply: Callable[[dict[str, Any]], httpx.Response] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/health":
            return httpx.Response(200)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "prm", "max_model_len": self.max_model_len}]})
        body = json.loads(request.content)
        self.requests.append(body)
        if self.reply is not None:
            return self.reply(body)
        assert request.url.path == "/pooling" and body["task"] == "token_classify" and not body["use_activation"]
        data = []
        for i, ids in enumerate(body["input"]):
            with torch.inference_mode():
                logits = self.torch.network(torch.tensor([ids]))[0].tolist()  # (T,)
            keep = range(len(ids)) if self.pooling == "ALL" else [p for p, t in enumerate(ids) if t == self.sep]
            data.append({"index": i, "object": "pooling", "data": [[0.0, logits[p]] for p in keep]})
        return httpx.Response(200, json={"data": data[::-1]})  # out of order: the client sorts by index


def scorer(path: Path, fake: FakeVLLM, **kw: Any) -> VLLMScorer:
    return VLLMScorer(path, url=URL, transport=httpx.MockTransport(fake), **kw)


@pytest.fixture
def fake(tiny_hf_export: Path) -> FakeVLLM:
    return FakeVLLM(tiny_hf_export)


@pytest.fixture
def served(tiny_hf_export: Path, fake: FakeVLLM, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(engine_module, "HEALTH_EVERY_S", 0.05)
    settings = Settings(checkpoint=tiny_hf_export, engine="vllm", engine_url=URL, split_workers=0)
    engine = ScoringEngine(scorer(tiny_hf_export, fake), settings)
    with TestClient(create_app(settings, engine=engine)) as client:
        yield client


@pytest.mark.parametrize("pooling", ["STEP", "ALL"])
def test_same_scores_as_the_torch_engine(tiny_hf_export: Path, pooling: str) -> None:
    fake = FakeVLLM(tiny_hf_export, pooling=pooling)
    remote = scorer(tiny_hf_export, fake)
    remote.connect()
    problem = PROBLEM + " <|step|> (a separator in the statement is one more pooled row)"
    batch = [remote.encode(problem, ["def main():\n    pass\n", "def f(x):\n    return x\n"]),
             remote.encode(PROBLEM, [CODES[1]])]
    local = [fake.torch.encode(problem, ["def main():\n    pass\n", "def f(x):\n    return x\n"]),
             fake.torch.encode(PROBLEM, [CODES[1]])]
    assert [e.input_ids for e in batch] == [e.input_ids for e in local]  # the tokenizers library, same ids
    got, want = remote.forward(batch), fake.torch.forward(local)
    assert [len(g) for g in got] == [len(w) for w in want] == [2, 1]
    assert list(chain(*got)) == pytest.approx(list(chain(*want)), abs=1e-5)
    assert remote.revision == fake.torch.revision and remote.template == fake.torch.template
    assert len(fake.requests) == 1 and len(fake.requests[0]["input"]) == 2  # one request per batch


def test_score_endpoint_truncates_like_the_torch_engine(tiny_hf_export: Path, served: TestClient,
                                                        fake: FakeVLLM) -> None:
    long_problem = "Sum two numbers. " * 400
    got = served.post("/v1/score", json={"problem": long_problem, "code": CODES[0]}).json()
    assert got["truncated"] and got["n_tokens"] <= 2048
    settings = Settings(checkpoint=tiny_hf_export, split_workers=0, dtype="float32")
    with TestClient(create_app(settings)) as local:
        wait_ready(local)
        want = local.post("/v1/score", json={"problem": long_problem, "code": CODES[0]}).json()
    assert got["n_tokens"] == want["n_tokens"] and got["model"] == want["model"]
    assert [s["score"] for s in got["steps"]] == pytest.approx([s["score"] for s in want["steps"]], abs=1e-5)


def test_the_servers_context_length_caps_max_tokens(tiny_hf_export: Path) -> None:
    remote = scorer(tiny_hf_export, FakeVLLM(tiny_hf_export, max_model_len=256))
    remote.connect()
    assert remote.max_tokens == 256 and remote.manifest.max_tokens == 256
    assert remote.encode("x " * 1000, ["def main():\n    pass\n"]).n_tokens <= 256


def test_unknown_served_model_is_not_ready(tiny_hf_export: Path, fake: FakeVLLM) -> None:
    with pytest.raises(ModelNotReady, match="not 'other'"):
        scorer(tiny_hf_export, fake, served_model="other").connect()


def test_engine_down_gives_503_with_retry_after_and_ready_follows(served: TestClient, fake: FakeVLLM) -> None:
    assert served.get("/ready").json()["ready"] is True
    fake.up = False
    r = served.post("/v1/score", json={"problem": PROBLEM, "code": CODES[1]})
    assert r.status_code == 503 and r.headers["retry-after"] and "unreachable" in r.json()["error"]["message"]
    for _ in range(500):  # the health check runs every 50 ms here
        ready = served.get("/ready")
        if ready.status_code == 503:
            break
        time.sleep(0.01)
    assert ready.status_code == 503 and "unreachable" in ready.json()["detail"]
    fake.up = True
    for _ in range(500):
        if served.get("/ready").status_code == 200:
            break
        time.sleep(0.01)
    assert served.post("/v1/score", json={"problem": PROBLEM, "code": CODES[1]}).status_code == 200


def test_slow_engine_times_out_as_503_not_a_hang(tiny_hf_export: Path, fake: FakeVLLM) -> None:
    def slow(body: dict[str, Any]) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")
    fake.reply = slow
    with pytest.raises(ModelNotReady, match="did not answer in time") as info:
        scorer(tiny_hf_export, fake).forward([fake.torch.encode(PROBLEM, [CODES[1]])])
    assert info.value.retry_after


@pytest.mark.parametrize(("response", "message"), [
    (httpx.Response(400, json={"error": "bad"}), "refused the request"),
    (httpx.Response(200, text="not json"), "non-JSON"),
    (httpx.Response(200, json={"data": []}), "0 results for 1"),
    (httpx.Response(200, json={"data": [{"index": 0, "data": [[1.0, 2.0, 3.0]]}]}), "2-label rows"),
    (httpx.Response(200, json={"data": [{"index": 0, "data": [[0.0, 1.0]] * 3}]}), "step_tag_id"),
    (httpx.Response(200, json={"data": [{"index": 0, "data": [["0", "1"]]}]}), "rows of numbers"),
    (httpx.Response(200, json={"data": ["rows"]}), "rows of numbers"),
    (httpx.Response(200, json={"data": [{"index": 3, "data": [[0.0, 1.0]]}]}), "rows of numbers"),
])
def test_nonsense_from_the_engine_is_an_engine_error(tiny_hf_export: Path, fake: FakeVLLM, response: httpx.Response,
                                                     message: str) -> None:
    fake.reply = lambda body: response
    with pytest.raises(EngineError, match=message):
        scorer(tiny_hf_export, fake).forward([fake.torch.encode(PROBLEM, [CODES[1]])])


def test_an_engine_error_is_a_502(served: TestClient, fake: FakeVLLM) -> None:
    fake.reply = lambda body: httpx.Response(400, json={"error": "prompt too long"})
    r = served.post("/v1/score", json={"problem": PROBLEM, "code": CODES[1]})
    assert r.status_code == 502 and r.json()["error"]["type"] == "engine_error"


def test_our_own_checkpoint_is_refused_with_the_export_command(tiny_checkpoint: Path) -> None:
    with pytest.raises(InvalidInput, match="--format hf"):
        VLLMScorer(tiny_checkpoint, url=URL)


def test_settings_need_the_engine_url() -> None:
    with pytest.raises(ValueError, match="engine_url"):
        Settings(engine="vllm")


def test_file_tokenizer_matches_transformers(tiny_hf_export: Path) -> None:
    from transformers import AutoTokenizer

    ours, theirs = FileTokenizer(tiny_hf_export), AutoTokenizer.from_pretrained(tiny_hf_export)
    for text in [PROBLEM, *CODES, "a <|step|> b\n\n\tc", "ünïcödé ✓"]:
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False)
    assert ours.convert_tokens_to_ids("<|step|>") == theirs.convert_tokens_to_ids("<|step|>")
    assert ours.bos_token_id == theirs.bos_token_id


ENGINE_WITHOUT_TORCH = r"""
import asyncio, json, sys, httpx
from pathlib import Path
from service.serving.vllm_scorer import VLLMScorer
rows = lambda ids: {"index": 0, "data": [[0.0, 0.5] for t in ids if t == sep]}
def reply(request):
    if request.url.path == "/v1/models":
        return httpx.Response(200, json={"data": [{"id": "prm", "max_model_len": 512}]})
    return httpx.Response(200, json={"data": [rows(ids) | {"index": i}
                                              for i, ids in enumerate(json.loads(request.content)["input"])]})
m = VLLMScorer(Path(sys.argv[1]), url="http://x", transport=httpx.MockTransport(reply))
sep = m.separator_id
m.connect()
print(json.dumps({"logits": m.forward([m.encode("p", ["def main():\n    pass\n"])]), "torch": "torch" in sys.modules}))
"""


def test_the_vllm_engine_never_imports_torch(tiny_hf_export: Path) -> None:
    out = subprocess.run([sys.executable, "-c", ENGINE_WITHOUT_TORCH, str(tiny_hf_export)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[3])
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"logits": [[0.5]], "torch": False}
