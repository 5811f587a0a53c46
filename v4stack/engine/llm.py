"""Offline batch generation, vLLM's ``LLM`` shape:

    llm = LLM("models/v4-demo-shakespeare")
    outs = llm.generate(["The king said", "O Romeo"], SamplingParams(max_tokens=32))
    outs[0].outputs[0].text, .token_ids, .finish_reason

All prompts are submitted at once and run with continuous batching until every one is done (a tqdm bar
counts finished prompts). Outputs come back in prompt order.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from v4stack.engine.config import EngineConfig
from v4stack.engine.llm_engine import LLMEngine
from v4stack.engine.outputs import RequestOutput
from v4stack.engine.sampling_params import SamplingParams


class LLM:
    def __init__(self, model_dir: str | Path | None = None, config: EngineConfig | None = None,
                 engine: LLMEngine | None = None) -> None:
        if engine is None:
            if model_dir is None:
                from v4stack.config.default_model import default_model_dir
                model_dir = default_model_dir()
            engine = LLMEngine.from_model_dir(model_dir, config)
        self.engine = engine
        self._counter = 0

    def generate(self, prompts: str | list[str] | list[list[int]],
                 params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """One RequestOutput per prompt (text or token ids), in order; ``params`` one for all or one each."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params_list = params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(params_list)} SamplingParams for {len(prompts)} prompts")
        ids = []
        for prompt, p in zip(prompts, params_list):
            rid = f"llm-{self._counter}"
            self._counter += 1
            self.engine.add_request(rid, prompt, p)
            ids.append(rid)
        done: dict[str, RequestOutput] = {}
        with tqdm(total=len(ids), desc="generating", unit="prompt", disable=not use_tqdm) as bar:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.finished:
                        done[out.request_id] = out
                        bar.update(1)
        return [done[rid] for rid in ids]
