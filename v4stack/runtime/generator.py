"""Single-sequence text generation on a loaded model: prefill the prompt, then decode token by token.

A minimal driver for the ``generate`` command and tests; continuous batching and paging belong to the
engine, which reuses the same model forward and ``SequenceState``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from v4stack.model import DeepseekV4, ForwardBatch
from v4stack.runtime.sampler import Sampler, SamplingParams
from v4stack.runtime.tokenizer import Tokenizer


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    finish_reason: str = "length"

    @property
    def decode_tokens_per_s(self) -> float:
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else 0.0


def generate_ids(model: DeepseekV4, prompt_ids: list[int], max_tokens: int, sampler: Sampler,
                 eos_id: int | None, stats: GenerationStats | None = None) -> Iterator[int]:
    """Yield up to ``max_tokens`` sampled ids (stopping after EOS)."""
    if not prompt_ids:
        raise ValueError("the prompt must contain at least one token")
    stats = stats or GenerationStats()
    stats.prompt_tokens = len(prompt_ids)
    state = model.new_state()
    t0 = time.perf_counter()
    logits = model(ForwardBatch.build([state], [torch.tensor(prompt_ids)])).logits[0]
    stats.prefill_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i in range(max_tokens):
        token = sampler(logits)
        stats.generated_tokens += 1
        yield token
        if token == eos_id:
            stats.finish_reason = "stop"
            break
        if i + 1 < max_tokens:
            logits = model(ForwardBatch.build([state], [torch.tensor([token])])).logits[0]
    stats.decode_s = time.perf_counter() - t1


def generate_text(model: DeepseekV4, tokenizer: Tokenizer, prompt: str, max_tokens: int,
                  params: SamplingParams, on_text: Callable[[str], None] | None = None) -> tuple[str, GenerationStats]:
    """Generate a completion of ``prompt``; ``on_text`` receives each newly decodable piece of text."""
    stats = GenerationStats()
    ids: list[int] = []
    shown = ""
    for token in generate_ids(model, tokenizer.encode(prompt), max_tokens, Sampler(params), tokenizer.eos_id, stats):
        ids.append(token)
        text = tokenizer.decode(ids)
        if on_text is not None and not text.endswith("\ufffd"):  # wait for complete UTF-8 characters
            on_text(text[len(shown):])
            shown = text
    return tokenizer.decode(ids), stats
