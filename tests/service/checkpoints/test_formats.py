"""Every foreign checkpoint format, served: /v1/score, /v1/rerank and /get_reward give the step scores of an
independent computation of that format's own convention (plain transformers / peft / the authors' forward,
written here from each format's documentation, not from our code), and /v1/models names the format."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    Qwen2Config,
    Qwen2Model,
)
from typer.testing import CliRunner

from service.checkpoints.load import load_scorer
from service.cli.main import app as cli
from service.http.app import create_app
from service.settings import Settings
from service.steps import split_steps
from tests import tiny_formats

PROBLEM = "Given two integers a and b on one line, print their sum."
CODES = ['import sys\n\n\ndef main():\n    a, b = map(int, sys.stdin.read().split())\n    print(add(a, b))\n\n\n'
         'def add(a, b):\n    """Sum."""\n    return a + b\n\n\nmain()\n',
         "def main():\n    print(sum(map(int, input().split())))\n\n\nmain()\n"]
Expected = Callable[[list[str]], list[float]]  # step texts -> P(correct) of each step
TOL = 1e-4


@contextmanager
def served(path: Path, **kw: Any) -> Iterator[TestClient]:
    settings = Settings(checkpoint=path, device="cpu", dtype="float32", policy="none", max_wait_ms=1.0, **kw)
    with TestClient(create_app(settings)) as client:  # the model loads in the background: wait for it
        deadline = time.monotonic() + 120
        while (r := client.get("/ready")).status_code != 200 and r.json()["detail"] == "loading":
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.05)
        yield client


def split(client: TestClient, code: str) -> list[str]:
    return [s["text"] for s in client.post("/v1/split", json={"code": code}).json()["steps"]]


def post(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def counted(client: TestClient, code: str, probs: list[float]) -> list[float]:
    """The step probabilities the aggregates use: no context steps (service.aggregate's rule)."""
    context = [s["context"] for s in client.post("/v1/split", json={"code": code}).json()["steps"]]
    return [p for p, c in zip(probs, context, strict=True) if not c] or probs


def check_all_routes(client: TestClient, fmt: str, expected: Expected) -> None:
    """/v1/models, /v1/score (one item and a batch), /v1/rerank and /get_reward against ``expected``."""
    info = client.get("/v1/models").json()["data"][0]
    assert info["format"] == fmt
    want = {code: expected(split(client, code)) for code in CODES}
    for code in CODES:
        body = post(client, "/v1/score", {"problem": PROBLEM, "code": code, "aggregation": "min"})
        assert [s["score"] for s in body["steps"]] == pytest.approx(want[code], abs=TOL)
        assert body["score"] == pytest.approx(min(counted(client, code, want[code])), abs=TOL)
        assert not body["truncated"]
    batch = post(client, "/v1/score", {"items": [{"problem": PROBLEM, "code": c} for c in CODES]})
    for code, item in zip(CODES, batch["items"], strict=True):
        assert [s["score"] for s in item["steps"]] == pytest.approx(want[code], abs=TOL)
    ranked = post(client, "/v1/rerank", {"problem": PROBLEM, "candidates": CODES, "aggregation": "mean"})
    for entry in ranked["ranking"]:
        probs = want[CODES[entry["index"]]]
        assert [s["score"] for s in entry["steps"]] == pytest.approx(probs, abs=TOL)
        used = counted(client, CODES[entry["index"]], probs)
        assert entry["score"] == pytest.approx(sum(used) / len(used), abs=TOL)
    assert ranked["ranking"][0]["score"] >= ranked["ranking"][1]["score"]
    rewards = post(client, "/get_reward", {"query": [PROBLEM + "\n```python\n" + c + "```" for c in CODES],
                                           "prompts": [PROBLEM] * len(CODES)})["rewards"]
    agg = info["default_aggregation"]
    assert agg == "min"
    assert rewards == pytest.approx([min(counted(client, c, want[c])) for c in CODES], abs=TOL)


# --- TRL PRMTrainer --------------------------------------------------------------------------------------------

def trl_expected(model: Any, tok: Any, separator: str = "\n") -> Expected:
    """TRL's tokenize_row: BOS + prompt tokens + (step tokens + separator tokens) per step, no special tokens;
    P(correct) = softmax(logits)[1] at the last separator token of each step."""
    def expected(steps: list[str]) -> list[float]:
        ids = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + tok(PROBLEM, add_special_tokens=False)[
            "input_ids"]
        ends = []
        for step in steps:
            ids += tok(step, add_special_tokens=False)["input_ids"] + tok(separator, add_special_tokens=False)[
                "input_ids"]
            ends.append(len(ids) - 1)
        with torch.no_grad():
            probs = model(input_ids=torch.tensor([ids])).logits.softmax(-1)[0, :, 1]
        return probs[ends].tolist()
    return expected


def test_trl_token_classification(tmp_path: Path) -> None:
    path = tiny_formats.trl_checkpoint(tmp_path / "trl")
    model = AutoModelForTokenClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.bos_token_id is not None
    with served(path) as client:
        check_all_routes(client, "token-classification", trl_expected(model, tok))
        assert client.get("/v1/models").json()["data"][0]["template"] == "trl-prm"
    with served(path, step_separator="\n\n") as client:  # DREAMPRM_STEP_SEPARATOR
        steps = split(client, CODES[0])
        body = post(client, "/v1/score", {"problem": PROBLEM, "code": CODES[0]})
        assert [s["score"] for s in body["steps"]] == pytest.approx(trl_expected(model, tok, "\n\n")(steps), abs=TOL)


def test_trl_peft_adapter_on_a_causal_lm_base(tmp_path: Path) -> None:
    from peft import PeftModel

    adapter, base = tiny_formats.trl_adapter_checkpoint(tmp_path)
    model = PeftModel.from_pretrained(AutoModelForTokenClassification.from_pretrained(base, num_labels=2),
                                      adapter).eval()
    tok = AutoTokenizer.from_pretrained(base)
    with served(adapter, base_model=base) as client:
        check_all_routes(client, "token-classification", trl_expected(model, tok))
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base)  # found without DREAMPRM_BASE_MODEL, too
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": "org/elsewhere"}))
    with served(adapter) as client:  # a base that is not here: refused with the reason, never a crash
        r = client.get("/ready")
        assert r.status_code == 503 and "DREAMPRM_BASE_MODEL" in r.json()["detail"]


# --- Qwen2.5-Math-PRM ------------------------------------------------------------------------------------------

def test_qwen_math_prm_style(tmp_path: Path) -> None:
    path = tiny_formats.qwen_prm_checkpoint(tmp_path / "qwen-prm")
    tok = AutoTokenizer.from_pretrained(path)
    weights = load_file(str(path / "model.safetensors"))
    config = Qwen2Config.from_pretrained(path)
    backbone = Qwen2Model(config).eval()
    backbone.load_state_dict({k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")})
    head = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    head.load_state_dict({k[len("score."):]: v for k, v in weights.items() if k.startswith("score.")})

    def expected(steps: list[str]) -> list[float]:  # the model card's recipe
        messages = [{"role": "system", "content": "Please reason step by step, and put your final answer within "
                                                  "\\boxed{}."},
                    {"role": "user", "content": PROBLEM},
                    {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = torch.tensor([tok.encode(text)])
        with torch.no_grad():
            probs = head(backbone(input_ids=ids).last_hidden_state).softmax(-1)[0, :, 1]
        return probs[ids[0] == tok.convert_tokens_to_ids("<extra_0>")].tolist()

    with served(path) as client:
        check_all_routes(client, "qwen2.5-math-prm", expected)


# --- the DreamPRM-Code authors' checkpoint ---------------------------------------------------------------------

def test_authors_checkpoint_converted_and_served(tmp_path: Path) -> None:
    pt, base, theirs = tiny_formats.authors_checkpoint(tmp_path)
    out = tmp_path / "converted"
    result = CliRunner().invoke(cli, ["convert", str(pt), str(out), "--base", str(base)])
    assert result.exit_code == 0, result.output
    assert not list(out.glob("*.pt")) and (out / "reward_head.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(base)

    def expected(steps: list[str]) -> list[float]:  # their script: every function prefix as its own text
        out, prefix = [], ""
        for step in steps:
            prefix += step
            text = (f"<task>\nPlatform: \nQuestion ID: \nTitle: \n</task>\n\n<problem>\n{PROBLEM}\n</problem>\n\n"
                    f"<starter_code>\n{prefix}\n</starter_code>")
            with torch.no_grad():
                out.append(theirs.score(tok(text, add_special_tokens=True)["input_ids"]))
        return out

    with served(out) as client:
        check_all_routes(client, "dreamprm-code-authors", expected)
    # the prefixes of every candidate run against one KV cache of the problem's tokens, with the same scores
    model = load_scorer(out, device="cpu", dtype="float32")
    items = [model.encode(PROBLEM, [s.text for s in split_steps(c)]) for c in CODES]
    rows = [r for item in items for r in item.rows]  # type: ignore[attr-defined]
    assert len({tuple(r.input_ids[: r.prefix_len]) for r in rows}) == 1 and rows[0].prefix_len >= 16
    shared = model.forward(items)
    model.share_prefix = False
    assert model.forward(items) == [pytest.approx(x, abs=1e-5) for x in shared]


def test_convert_never_unpickles_code(tmp_path: Path) -> None:
    (tmp_path / "evil.pt").write_bytes(b"\x80\x04cos\nsystem\n(S'touch pwned'\ntR.")
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "evil.pt"), str(tmp_path / "out"), "--base", "x"])
    assert result.exit_code == 2 and "weights_only" in result.output
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out").exists()


# --- outcome reward models -------------------------------------------------------------------------------------

def test_outcome_reward_model(tmp_path: Path) -> None:
    path = tiny_formats.orm_checkpoint(tmp_path / "orm")
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)

    def reward(code: str) -> float:  # the usual reward-model recipe: chat-formatted, scalar at the last token
        text = tok.apply_chat_template([{"role": "user", "content": PROBLEM},
                                        {"role": "assistant", "content": code}], tokenize=False)
        with torch.no_grad():
            return float(torch.sigmoid(model(input_ids=torch.tensor([tok(text, add_special_tokens=False)[
                "input_ids"]])).logits[0, 0]))

    with served(path) as client:
        info = client.get("/v1/models").json()["data"][0]
        assert info["format"] == "orm" and info["default_aggregation"] == "last"
        for code in CODES:
            body = post(client, "/v1/score", {"problem": PROBLEM, "code": code})
            scores = [s["score"] for s in body["steps"]]
            assert scores[:-1] == [None] * (len(scores) - 1)  # one score: the whole program's
            assert scores[-1] == pytest.approx(reward(code), abs=TOL) and body["score"] == scores[-1]
            steps = split(client, code)
            prefixes = [reward("".join(steps[: k + 1])) for k in range(len(steps))]
            body = post(client, "/v1/score", {"problem": PROBLEM, "code": code, "prefix_scores": True})
            assert [s["score"] for s in body["steps"]] == pytest.approx(prefixes, abs=TOL)
        ranked = post(client, "/v1/rerank", {"problem": PROBLEM, "candidates": CODES})
        assert {e["index"]: e["score"] for e in ranked["ranking"]} == pytest.approx(
            {i: reward(c) for i, c in enumerate(CODES)}, abs=TOL)
        rewards = post(client, "/get_reward", {"query": [PROBLEM + "\n```python\n" + c + "```" for c in CODES],
                                               "prompts": [PROBLEM] * 2})["rewards"]
        assert rewards == pytest.approx([reward(c) for c in CODES], abs=TOL)


# --- refusals --------------------------------------------------------------------------------------------------

def test_unknown_format_is_refused_naming_the_accepted_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["BertForMaskedLM"], "model_type": "bert"}')
    result = CliRunner().invoke(cli, ["serve", "--checkpoint", str(tmp_path)])
    assert result.exit_code == 2
    for name in ("dreamprm", "token-classification", "qwen2.5-math-prm", "dreamprm-code-authors", "orm"):
        assert name in result.output
