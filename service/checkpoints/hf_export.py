"""Our PRM as a standard Hugging Face ``*ForTokenClassification`` directory (``python -m trainer export --format hf``).

Plain ``transformers`` loads it (``AutoModelForTokenClassification``, no project code); TRL, pipelines and vLLM
can use it. The backbone is written merged (an adapter checkpoint's LoRA folded in, the separator token's
embedding included); the 2-label head is equivalent to our sigmoid head: label 0's logit is 0 and label 1's
is ours, so ``softmax(logits)[1] == sigmoid(our logit)``. ``prm_template.json`` records how steps are joined,
so ``dreamprm serve`` reads it back with the same scores.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForTokenClassification

from service.checkpoints.detect import SIDECAR
from service.checkpoints.manifest import atomic_checkpoint_dir, read_manifest
from service.model import PRMModel

LABELS = {0: "incorrect", 1: "correct"}


def export_hf(model: PRMModel, out: Path, *, name: str | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` to ``out`` as a ``*ForTokenClassification`` directory (fp32 safetensors + tokenizer +
    ``prm_template.json`` + ``README.md``), atomically.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is false.
        ValueError: the backbone's architecture has no token-classification class in transformers.
    """
    if out.exists() and not overwrite:
        raise FileExistsError(out)
    backbone = model.network.backbone
    head = model.network.head
    config = copy.deepcopy(backbone.config)
    config.num_labels = 2
    config.id2label = dict(LABELS)
    config.label2id = {v: k for k, v in LABELS.items()}
    config.architectures = None
    try:
        net = AutoModelForTokenClassification.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"{type(backbone).__name__} has no token-classification class in transformers") from exc
    net.base_model.load_state_dict({k: v.float() for k, v in backbone.state_dict().items()})
    score = net.score if hasattr(net, "score") else net.classifier
    with torch.no_grad():
        score.weight.zero_()
        score.weight[1] = head.weight[0].float()  # label 1 = ours; label 0 stays at logit 0
        if score.bias is not None:
            score.bias.zero_()
            score.bias[1] = head.bias[0].float()
        elif head.bias is not None and float(head.bias[0]) != 0.0:
            raise ValueError("the token-classification head has no bias to hold ours")
    net.config.architectures = [type(net).__name__]
    m = model.manifest
    sidecar = {"template": m.template, "step_separator": m.separator_token, "max_tokens": m.max_tokens,
               "default_aggregation": m.default_aggregation, "name": name or m.name,
               "separator_id": model.separator_id}  # vLLM's step_tag_id (README "Scoring engines")
    with atomic_checkpoint_dir(out) as tmp:
        net.save_pretrained(tmp, safe_serialization=True)
        model.tokenizer.save_pretrained(tmp)
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
        (tmp / "README.md").write_text(_readme(name or m.name, type(net).__name__, sidecar))
    return out


def export_hf_stage(source: Path, out: Path, *, name: str | None = None, base: Path | None = None) -> Path:
    """Load our checkpoint at ``source`` (fp32, CPU) and write it to ``out`` as a Hugging Face directory."""
    manifest = read_manifest(source)
    model = PRMModel.load(source, device="cpu", dtype="float32", base=base)
    return export_hf(model, out, name=name or manifest.name, overwrite=True)


def _readme(name: str, arch: str, sidecar: dict[str, Any]) -> str:
    sep = sidecar["step_separator"]
    return f"""# {name} (Hugging Face token-classification export)

A DreamPRM-Code process reward model as a standard `{arch}` (2 labels: 0 = incorrect, 1 = correct).
Input (template `{sidecar["template"]}`): `"Problem:\\n" + problem + "\\n\\nSolution:\\n"`, then every step (one
function of the program) followed by the special token `{sep}`; the score of step k is `softmax(logits)[1]` at
the k-th `{sep}`.

```python
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

tok = AutoTokenizer.from_pretrained(PATH)
model = AutoModelForTokenClassification.from_pretrained(PATH).eval()
steps = ["def main():\\n    print(add(1, 2))\\n", "def add(a, b):\\n    return a + b\\n"]
ids = tok.encode("Problem:\\n" + problem + "\\n\\nSolution:\\n", add_special_tokens=False)
for s in steps:
    ids += tok.encode(s, add_special_tokens=False) + [tok.convert_tokens_to_ids("{sep}")]
probs = model(torch.tensor([ids])).logits.softmax(-1)[0, :, 1]
scores = probs[torch.tensor(ids) == tok.convert_tokens_to_ids("{sep}")]
```

`dreamprm serve --checkpoint PATH` serves it with the same scores (`prm_template.json` says how).
"""
