"""``export --format hf``: plain transformers loads the directory and reads our scores; our service serves it
back with the same step scores as the checkpoint it came from."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from service.model import PRMModel
from tests.service.checkpoints.test_formats import CODES, PROBLEM, post, served, split

# Runs in a fresh interpreter: only torch and transformers, the recipe of the exported README.
PLAIN = r'''
import json, sys, torch
from transformers import AutoModelForTokenClassification, AutoTokenizer
path, problem, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForTokenClassification.from_pretrained(path).eval()
sep = tok.convert_tokens_to_ids("<|step|>")
ids = tok.encode("Problem:\n" + problem + "\n\nSolution:\n", add_special_tokens=False)
for s in steps:
    ids += tok.encode(s, add_special_tokens=False) + [sep]
with torch.no_grad():
    probs = model(torch.tensor([ids])).logits.softmax(-1)[0, :, 1]
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("service", "trainer", "clients"))
print(json.dumps({"scores": probs[torch.tensor(ids) == sep].tolist(), "arch": type(model).__name__, "ours": ours}))
'''


def test_plain_transformers_reads_our_scores(tiny_hf_export: Path, tiny_checkpoint: Path) -> None:
    config = json.loads((tiny_hf_export / "config.json").read_text())
    assert config["architectures"] == ["LlamaForTokenClassification"]
    assert not list(tiny_hf_export.glob("*.bin")) and list(tiny_hf_export.glob("*.safetensors"))
    ours = PRMModel.load(tiny_checkpoint, device="cpu", dtype="float32")
    steps = ["import sys\n\n\n", "def main():\n    print(add(1, 2))\n\n\n", "def add(a, b):\n    return a + b\n"]
    logits = ours.forward([ours.encode(PROBLEM, steps)])[0]
    out = subprocess.run([sys.executable, "-I", "-c", PLAIN, str(tiny_hf_export), PROBLEM, json.dumps(steps)],
                         capture_output=True, text=True, check=True, cwd=tiny_hf_export)
    plain = json.loads(out.stdout.strip().splitlines()[-1])
    assert plain["ours"] == [] and plain["arch"] == "LlamaForTokenClassification"
    assert plain["scores"] == pytest.approx([1 / (1 + math.exp(-x)) for x in logits], abs=1e-5)


def test_served_back_with_the_same_scores(tiny_hf_export: Path, tiny_checkpoint: Path) -> None:
    with served(tiny_checkpoint) as client:
        original = {c: post(client, "/v1/score", {"problem": PROBLEM, "code": c}) for c in CODES}
    with served(tiny_hf_export) as client:
        info = client.get("/v1/models").json()["data"][0]
        assert info["format"] == "token-classification" and info["template"] == "dreamprm-cof-v1"
        for code in CODES:
            assert len(split(client, code)) > 1
            body = post(client, "/v1/score", {"problem": PROBLEM, "code": code})
            want = [s["score"] for s in original[code]["steps"]]
            assert [s["score"] for s in body["steps"]] == pytest.approx(want, abs=1e-4)


def test_export_refuses_an_existing_directory_only_through_the_api(tiny_hf_export: Path, tiny_checkpoint: Path) -> None:
    from service.checkpoints.hf_export import export_hf

    with pytest.raises(FileExistsError):
        export_hf(PRMModel.load(tiny_checkpoint, device="cpu", dtype="float32"), tiny_hf_export)
