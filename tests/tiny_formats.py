"""Tiny random checkpoints of every foreign format we serve, built offline from a config in seconds.

Each builder writes what that format's own tooling writes (TRL + peft, Qwen2.5-Math-PRM's safetensors and
config, the DreamPRM-Code authors' ``torch.save`` of their model, a sequence-classification ORM).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2Model,
)

from tests.tiny import tiny_tokenizer

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tokenizer(*, bos: bool = False, chat: bool = False, extra: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    tok = tiny_tokenizer()
    if bos:
        tok.add_special_tokens({"bos_token": "<|bos|>"})
        tok._tokenizer.post_processor = None
    if chat:
        tok.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
        tok.chat_template = CHATML
    if extra:
        tok.add_tokens(list(extra), special_tokens=True)
    return tok


def llama_config(tok: Any, **kw: Any) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       pad_token_id=tok.pad_token_id, **kw)


def qwen2_config(tok: Any, **kw: Any) -> Qwen2Config:
    return Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       pad_token_id=tok.pad_token_id, **kw)


def _randomize_lora(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def trl_checkpoint(path: Path, *, seed: int = 1) -> Path:
    """TRL PRMTrainer's output: a LlamaForTokenClassification, 2 labels, tokenizer with a BOS."""
    torch.manual_seed(seed)
    tok = tokenizer(bos=True)
    model = AutoModelForTokenClassification.from_config(llama_config(tok, num_labels=2))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def trl_adapter_checkpoint(path: Path, *, seed: int = 2) -> tuple[Path, Path]:
    """TRL PRMTrainer with peft (task TOKEN_CLS) on a Qwen2 causal LM: (adapter dir, base dir)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    tok = tokenizer()
    base = path / "base"
    AutoModelForCausalLM.from_config(qwen2_config(tok)).save_pretrained(base)
    tok.save_pretrained(base)
    model = AutoModelForTokenClassification.from_pretrained(base, num_labels=2)
    peft_model = get_peft_model(model, LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=8,
                                                  target_modules=["q_proj", "v_proj", "o_proj"]))
    _randomize_lora(peft_model, seed)
    with torch.no_grad():
        peft_model.base_model.model.score.modules_to_save["default"].weight.normal_(0, 0.5)
    peft_model.save_pretrained(path / "adapter")
    return path / "adapter", base


def qwen_prm_checkpoint(path: Path, *, seed: int = 3) -> Path:
    """A Qwen2.5-Math-PRM-style directory: Qwen2Model weights under model.*, the score MLP under score.*, a
    config naming Qwen2ForProcessRewardModel (with the auto_map we must not follow) and a chat tokenizer."""
    torch.manual_seed(seed)
    tok = tokenizer(chat=True, extra=("<extra_0>",))
    config = qwen2_config(tok)
    backbone = Qwen2Model(config)
    score = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    with torch.no_grad():
        for p in score.parameters():
            p.normal_(0, 0.5)
    tensors = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    tensors |= {f"score.{k}": v.contiguous() for k, v in score.state_dict().items()}
    path.mkdir(parents=True)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg = config.to_dict() | {"architectures": ["Qwen2ForProcessRewardModel"],
                              "auto_map": {"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}}
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    (path / "modeling_qwen2_rm.py").write_text("raise RuntimeError('remote code must never run')\n")
    tok.save_pretrained(path)
    return path


class AuthorsRewardModel(torch.nn.Module):
    """The shape of the authors' RewardScalarModel: a peft-wrapped causal LM ``lm`` and ``reward_head``."""

    def __init__(self, base: Path, seed: int) -> None:
        from peft import LoraConfig, TaskType, get_peft_model

        super().__init__()
        lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        self.lm = get_peft_model(lm, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=16,
                                                target_modules=["q_proj", "v_proj", "k_proj", "o_proj"]))
        _randomize_lora(self.lm, seed)
        self.reward_head = torch.nn.Linear(lm.config.hidden_size, 1, bias=True)
        with torch.no_grad():
            self.reward_head.weight.normal_(0, 0.5)
            self.reward_head.bias.fill_(0.1)

    def score(self, ids: list[int]) -> float:
        """Their forward for one unpadded sequence: sigmoid(head(last hidden state at the last token))."""
        out = self.lm(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                      output_hidden_states=True, use_cache=False, return_dict=True)
        return float(torch.sigmoid(self.reward_head(out.hidden_states[-1][0, -1])))


def authors_checkpoint(path: Path, *, seed: int = 4) -> tuple[Path, Path, AuthorsRewardModel]:
    """Their ``torch.save(model.state_dict())`` on a tiny Qwen2 base: (.pt file, base dir, the model)."""
    torch.manual_seed(seed)
    tok = tokenizer()
    base = path / "Qwen2.5-Coder-tiny"
    AutoModelForCausalLM.from_config(qwen2_config(tok)).save_pretrained(base)
    tok.save_pretrained(base)
    model = AuthorsRewardModel(base, seed).eval()
    torch.save(model.state_dict(), path / "reward_model_step_50.pt")
    return path / "reward_model_step_50.pt", base, model


def orm_checkpoint(path: Path, *, seed: int = 5, chat: bool = True) -> Path:
    """A Qwen2ForSequenceClassification outcome reward model (1 label), chat tokenizer."""
    torch.manual_seed(seed)
    tok = tokenizer(chat=chat)
    model = AutoModelForSequenceClassification.from_config(qwen2_config(tok, num_labels=1))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
