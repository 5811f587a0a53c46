"""The one prefill-then-decode loop over a model that keeps its own per-sequence state (no paging, no scheduler).

The golden runner's free-running greedy continuation, the training's MTP acceptance measure and the CPU
benches drive a model this way; the serving engine (``engine/``) runs the same two phases through its scheduler
and paged cache instead. The loop knows nothing of the model family: ``forward`` is a closure over the caller's
states (``v4_forward`` builds it for DeepSeek-V4's ``ForwardBatch``; a V4.1 model is called as
``model(state, ids)``).

    for step in prefill_then_decode(forward, prompts, new_tokens=32):
        step.index    0 for the prompt's prefill, then 1, 2, ... one per decode forward
        step.tokens   [B] the tokens chosen from this step's logits (fed to the next forward)
        step.output   what ``forward`` returned (``.logits`` [B, V]: each sequence's last row)
        step.seconds  wall time of the forward(s) and the choice

``new_tokens`` tokens come from ``new_tokens`` forwards (the prefill's, then new_tokens - 1 decode steps); the
generator is lazy, so a caller may run other forwards on the same states between steps (the MTP block's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

# forward(pieces) -> an output with .logits [B, V]: pieces[b] is sequence b's next ids [n_b] (int64)
Forward = Callable[[list[torch.Tensor]], Any]
Choose = Callable[[torch.Tensor], torch.Tensor]  # logits [B, V] -> token ids [B]


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, V] -> ``logits.argmax(-1)`` [B]; a caller holding a model passes its table's ``argmax`` entry
    instead (the same indices, the platform's kernel)."""
    return logits.argmax(-1)


@dataclass(frozen=True)
class Step:
    index: int
    tokens: torch.Tensor  # [B] int64
    output: Any
    seconds: float


def v4_forward(model, states: list) -> Forward:
    """``forward`` for a ``model.DeepseekV4`` over ``states`` (one ``SequenceState`` per prompt)."""
    from v4stack.model.batch import ForwardBatch

    return lambda pieces: model(ForwardBatch.build(states, pieces))


def prefill_then_decode(forward: Forward, prompts: list[torch.Tensor], new_tokens: int, choose: Choose = greedy,
                        chunk: int | None = None) -> Iterator[Step]:
    """Prefill ``prompts`` (in chunks of ``chunk`` tokens when given; batched prompts must then be of one length,
    so every forward has a piece for every sequence), then decode until ``new_tokens`` tokens are chosen."""
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    if not prompts or any(p.numel() == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    length = prompts[0].numel()
    if chunk is not None and len(prompts) > 1 and any(p.numel() != length for p in prompts):
        raise ValueError("chunked prefill of a batch needs prompts of one length")
    t0 = time.perf_counter()
    step = chunk or max(p.numel() for p in prompts)
    for begin in range(0, max(p.numel() for p in prompts), step):
        output = forward([p[begin:begin + step] for p in prompts])
    tokens = choose(output.logits)
    yield Step(0, tokens, output, time.perf_counter() - t0)
    for index in range(1, new_tokens):
        t0 = time.perf_counter()
        output = forward(list(tokens[:, None]))
        tokens = choose(output.logits)
        yield Step(index, tokens, output, time.perf_counter() - t0)
