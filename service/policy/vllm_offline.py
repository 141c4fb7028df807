"""Policy on vLLM's offline engine (``LLM.chat``), for GPU machines. vLLM is imported lazily:
it is an optional extra (``pip install .[vllm]``) and CUDA-only in its official wheels."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from service.policy import Generation, GenerationRequest


class VLLMPolicy:
    """Implements ``service.policy.Policy`` with one in-process ``vllm.LLM``."""

    def __init__(self, model: str, **engine_kwargs: Any) -> None:
        from vllm import LLM  # lazy: optional dependency

        self.name = f"vllm:{model}"
        self._llm = LLM(model=model, **engine_kwargs)
        self._lock = threading.Lock()

    async def generate(self, request: GenerationRequest) -> list[Generation]:
        return await asyncio.to_thread(self.generate_sync, request)

    def generate_sync(self, request: GenerationRequest) -> list[Generation]:
        from vllm import SamplingParams

        params = SamplingParams(n=request.n, temperature=request.temperature, top_p=request.top_p,
                                max_tokens=request.max_tokens, seed=request.seed, stop=list(request.stop),
                                include_stop_str_in_output=True)
        messages = list(request.messages)
        if request.prefix:
            messages.append({"role": "assistant", "content": request.prefix})
        with self._lock:
            outputs = self._llm.chat(messages, sampling_params=params, use_tqdm=False,
                                     add_generation_prompt=not request.prefix,
                                     continue_final_message=bool(request.prefix))
        return [Generation(o.text, str(o.finish_reason), len(o.token_ids)) for o in outputs[0].outputs]

    async def aclose(self) -> None:
        return None
