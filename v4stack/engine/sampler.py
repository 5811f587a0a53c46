"""Next tokens for every sampling request of a step, each by its own ``SamplingParams``.

Order, per row (vLLM's): raw log-probabilities (what ``logprobs`` reports, before any processing), the
request's grammar mask (constrained decoding, ``engine/structured.py``), min_tokens (EOS and stop ids masked
until then), repetition / presence / frequency penalties, then greedy argmax, or
temperature -> top-k -> top-p -> min-p and a draw. The draw uses the request's own ``torch.Generator``
(exponential race: argmax(p / E) with E ~ Exp(1) is a sample of p), so a seeded request gets the same tokens
whatever else is in the batch and wherever its row is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from v4stack.engine.request import Request
from v4stack.ops.reference.sampling import argmax as reference_argmax


@dataclass(frozen=True)
class TokenLogprobs:
    """The sampled token's log-probability and rank (1 = most likely), and the top-n alternatives."""

    token_id: int
    logprob: float
    rank: int
    top: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class SampledToken:
    token_id: int
    logprobs: TokenLogprobs | None


def _apply_penalties(row: torch.Tensor, req: Request) -> None:
    p = req.params
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(req.all_token_ids)), dtype=torch.long, device=row.device)
        vals = row[seen]
        row[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and req.output_token_ids:
        out = torch.tensor(req.output_token_ids, dtype=torch.long, device=row.device)
        counts = torch.bincount(out, minlength=row.shape[0]).to(row.dtype)
        row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)


def _suppress_stops(row: torch.Tensor, req: Request) -> None:
    ids = list(req.params.stop_token_ids)
    if req.eos_token_id is not None:
        ids.append(req.eos_token_id)
    ids = [i for i in ids if i < row.shape[0]]
    if ids:
        row[torch.tensor(ids, device=row.device)] = float("-inf")


def _filter(row: torch.Tensor, req: Request) -> torch.Tensor:
    """Temperature-scaled logits [V] -> probabilities with top-k, top-p and min-p applied."""
    p = req.params
    logits = row / p.temperature
    if 0 < p.top_k < logits.shape[0]:
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= p.top_p  # keeps the smallest head reaching top_p
        probs = probs.scatter(0, order[drop], 0.0)
    if p.min_p > 0.0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
    return probs


def _logprobs(raw: torch.Tensor, token: int, n: int) -> TokenLogprobs:
    lp = torch.log_softmax(raw, dim=-1)
    chosen = float(lp[token])
    rank = int((lp > lp[token]).sum()) + 1
    top = torch.topk(lp, n) if n > 0 else None
    pairs = () if top is None else tuple(zip(top.indices.tolist(), top.values.tolist()))
    return TokenLogprobs(token, chosen, rank, pairs)


class Sampler:
    def __init__(self, argmax: Callable[[torch.Tensor], torch.Tensor] = reference_argmax) -> None:
        self.argmax = argmax  # the op table's greedy choice, logits [R, V] -> [R]

    def __call__(self, logits: torch.Tensor, requests: list[Request]) -> list[SampledToken]:
        """logits [n, V] fp32, row i for requests[i] -> one token per request."""
        out = []
        for row, req in zip(logits.float(), requests):
            p = req.params
            raw = row.clone() if p.logprobs is not None else None
            allowed = req.guide.allowed(row.shape[0]) if req.guide is not None else None  # bool [V] or None
            if allowed is not None:
                row = row.masked_fill(~allowed.to(row.device), float("-inf"))
            if req.num_output_tokens < p.min_tokens and allowed is None:  # a grammar's end (EOS) wins
                _suppress_stops(row, req)
            if p.uses_penalties:
                _apply_penalties(row, req)
            if p.greedy:
                token = int(self.argmax(row[None])[0])
            else:
                probs = _filter(row, req)
                race = torch.empty_like(probs).exponential_(generator=req.generator)
                token = int((probs / race).argmax())
            out.append(SampledToken(token, None if raw is None else _logprobs(raw, token, p.logprobs)))
        return out
