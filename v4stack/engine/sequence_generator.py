"""One request on a model that keeps its own per-sequence state (DeepSeek-V4.1, ``model/v41/state.py``), for
``v4stack generate``: the prompt is prefilled in chunks of ``max_num_batched_tokens``, then one token per step.
Tokens are chosen by the engine's ``Sampler`` and turned into text by its ``Detokenizer``, with the engine's stop
rules (EOS unless ignored, stop token ids, stop strings, min_tokens, max_tokens / context limit) and seeding, so a
request behaves as it would in ``LLMEngine``. What it is not: batched, paged or prefix-cached; the engine's
cache specs and scheduler are built for V4's attention and serve V4 only (``engine_model_config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from v4stack.config import validation as check
from v4stack.config.numerics import Numerics
from v4stack.engine.config import EngineConfig
from v4stack.engine.detokenizer import Detokenizer
from v4stack.engine.request import FinishReason, Request, stop_decision
from v4stack.engine.sampler import Sampler
from v4stack.engine.sampling_params import SamplingParams


@dataclass(frozen=True)
class GeneratedPiece:
    """One generated token: its id, the text it completes (may be empty) and, on the last, why it ended."""

    token_id: int
    text: str
    finish_reason: FinishReason | None = None


class SequenceGenerator:
    def __init__(self, model, tokenizer, config: EngineConfig) -> None:
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.max_model_len = check.context_limit(model.cfg.max_position_embeddings, config.max_model_len,
                                                 "--max-model-len")
        self.eos_token_id = getattr(tokenizer, "eos_id", model.cfg.eos_token_id)
        self.sampler = Sampler()

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, config: EngineConfig | None = None) -> "SequenceGenerator":
        from v4stack.engine.tokenizer import Tokenizer
        from v4stack.modelio.loader import load_model
        from v4stack.platforms import get_platform

        config = config or EngineConfig()
        platform = get_platform(config.platform)
        # The platform's reference table on purpose: its fast table is validated against V4's golden cases only,
        # and the reference ops compute every numerics mode (fast's quantisation points included), only slower.
        model = load_model(model_dir, Numerics.from_name(config.numerics), ops=platform.op_table(),
                           device=platform.device(), progress=False, engram=config.engram)
        return cls(model, Tokenizer(model_dir), config)

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[GeneratedPiece]:
        """Yield the generated tokens of one request; the last piece carries the finish reason."""
        if params.n != 1 or params.guide is not None:
            raise check.ParameterError("n / guide", params.n, "n = 1 without a grammar for a DeepSeek-V4.1 model")
        vocab = self.model.cfg.vocab_size
        if not prompt_ids or any(not 0 <= t < vocab for t in prompt_ids):
            raise check.ParameterError("prompt token ids", len(prompt_ids), f"at least one, each in [0, {vocab})")
        max_tokens = params.max_tokens if params.max_tokens is not None else self.max_model_len - len(prompt_ids)
        check.check_context(len(prompt_ids), max(max_tokens, 1), self.max_model_len)
        seed = params.seed if params.seed is not None else self.config.seed
        req = Request("generate", list(prompt_ids), params, None if params.ignore_eos else self.eos_token_id,
                      self.max_model_len, generator=torch.Generator().manual_seed(seed))
        detok = Detokenizer(self.tokenizer, params)
        state, chunk = self.model.new_state(), self.config.scheduler.max_num_batched_tokens
        ids = torch.tensor(prompt_ids, dtype=torch.long)
        for begin in range(0, ids.numel(), chunk):
            logits = self.model(state, ids[begin:begin + chunk]).logits  # [1, V]: the chunk's last position
        while True:
            token = self.sampler(logits.cpu(), [req])[0].token_id
            req.output_token_ids.append(token)
            decision = stop_decision(req, token, detok.add(token))
            reason = decision[0] if decision is not None else None
            if reason is not None:
                detok.flush()
                yield GeneratedPiece(token, detok.take_new_text(True), reason)
                return
            yield GeneratedPiece(token, detok.take_new_text(False))
            logits = self.model(state, torch.tensor([token])).logits
