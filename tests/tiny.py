"""A tiny, randomly initialised PRM built from a config: offline, seconds to make.

Used by the tests and by the benchmarks' "tiny" configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from service.checkpoints.manifest import BaseModelSpec
from service.model import PRMModel

_CORPUS = [
    "def main():\n    n = int(input())\n    print(solve(n))\n",
    "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        return []\n",
    'def helper(xs):\n    """Return the sum."""\n    return sum(x for x in xs if x > 0)\n',
    "Given an array of integers nums and an integer target, return indices of the two numbers.",
    "import sys\nfrom typing import List\nfor i in range(10):\n    if i % 2 == 0:\n        continue\n",
]


def tiny_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def tiny_lm(*, hidden: int = 32, layers: int = 2, seed: int = 0,
            spare_rows: int = 1) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A tiny random causal LM and its tokenizer (``spare_rows`` embedding rows beyond the vocabulary:
    with none, adding the step separator resizes the table, as for SmolLM2)."""
    import torch

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok) + spare_rows, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True)
    return LlamaForCausalLM(config), tok


def tiny_gemma3(*, seed: int = 3, sliding_window: int = 16) -> tuple[Any, PreTrainedTokenizerFast]:
    """A tiny causal LM with Gemma 3's layout (a backbone the trainer supports): sliding-window layers, here
    with a window shorter than a problem prefix, and one full-attention layer."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=len(tok) + 1, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=sliding_window,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"])
    return Gemma3ForCausalLM(config), tok


def save_tiny_lm(path: Path, **kwargs: int) -> Path:
    """A tiny base model as a Hugging Face directory (what an adapter checkpoint is trained on)."""
    model, tok = tiny_lm(**kwargs)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_prm(*, hidden: int = 32, layers: int = 2, seed: int = 0, max_tokens: int = 1024) -> PRMModel:
    backbone, tok = tiny_lm(hidden=hidden, layers=layers, seed=seed)
    return PRMModel.create(backbone, tok, name="tiny-random-prm", seed=seed, max_tokens=max_tokens,
                           base_model=BaseModelSpec(id="tiny-random-llama", revision=f"seed{seed}"))


def tiny_gemma3_prm(*, seed: int = 3, max_tokens: int = 1024) -> PRMModel:
    backbone, tok = tiny_gemma3(seed=seed)
    return PRMModel.create(backbone, tok, name="tiny-random-gemma3-prm", seed=seed, max_tokens=max_tokens,
                           base_model=BaseModelSpec(id="tiny-random-gemma3", revision=f"seed{seed}"))


def save_tiny_prm(path: Path, **kwargs: int) -> Path:
    tiny_prm(**kwargs).save(path)
    return path
