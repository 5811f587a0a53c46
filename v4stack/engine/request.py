"""A request's state inside the engine: the minimum stored, the rest derived.

The scheduler moves ``num_computed_tokens`` toward ``num_tokens`` (prompt + generated so far); a step that
reaches ``num_tokens`` samples one more token. Preemption resets ``num_computed_tokens`` to 0 (the cache is
freed and the tokens are recomputed later, usually with prefix-cache hits on what the request itself cached).
The cache manager owns the block tables (``cache``); the scheduler never touches tensors.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from v4stack.cache.view import SeqCache
from v4stack.engine.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


class FinishReason(str, enum.Enum):
    """Why a request ended (OpenAI's finish_reason values, plus ``abort`` and ``error``)."""

    STOP = "stop"  # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_tokens or the context limit
    ABORT = "abort"  # the client went away or asked
    ERROR = "error"  # the step that ran it raised; the engine carried on


@dataclass
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    eos_token_id: int | None
    max_total_tokens: int  # context limit: prompt + output never exceed it
    arrival_time: float = field(default_factory=time.monotonic)
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_mtp_computed_tokens: int = 0  # the MTP block's cache may lag one token behind after a prefix hit
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None  # the stop string or token id that ended it
    error: str | None = None
    cache: SeqCache | None = None  # block tables, set by the cache manager while the request holds blocks
    block_hashes: list[bytes] = field(default_factory=list)  # hash chain of its full blocks (prefix caching)
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at first scheduling
    num_preemptions: int = 0
    generator: torch.Generator | None = None  # per-request sampling randomness (seeded or drawn at admission)
    guide: Any = None  # engine.structured.Guide when params.guide is set: the token mask the sampler applies
    # timing, for metrics: first scheduled, first token, last token
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def max_tokens(self) -> int:
        """Output tokens allowed: the request's max_tokens, bounded by the context limit."""
        room = self.max_total_tokens - self.num_prompt_tokens
        return room if self.params.max_tokens is None else min(self.params.max_tokens, room)

    @property
    def is_finished(self) -> bool:
        return self.status == RequestStatus.FINISHED

    @property
    def is_prefill(self) -> bool:
        """Still computing tokens it already knows (prompt, or recompute after preemption)."""
        return self.num_computed_tokens < self.num_tokens - 1

    def token_ids_between(self, start: int, end: int) -> list[int]:
        """Known token ids of positions start..end-1 (prompt and output)."""
        n = self.num_prompt_tokens
        if end <= n:
            return self.prompt_token_ids[start:end]
        if start >= n:
            return self.output_token_ids[start - n:end - n]
        return self.prompt_token_ids[start:] + self.output_token_ids[:end - n]


def stop_decision(req: Request, token: int, stop_str: str | None) -> tuple[FinishReason, Any] | None:
    """The stop rules for a request's newest ``token`` (already appended to its outputs), with ``stop_str``
    the stop string the detokeniser just matched (None: none): (reason, stop_reason) when it ends, else None.
    EOS, stop token ids and stop strings count only once ``min_tokens`` are out; ``max_tokens`` always."""
    p = req.params
    if req.num_output_tokens >= p.min_tokens:
        if req.eos_token_id is not None and token == req.eos_token_id:
            return FinishReason.STOP, None
        if token in p.stop_token_ids:
            return FinishReason.STOP, token
        if stop_str is not None:
            return FinishReason.STOP, stop_str
    if req.num_output_tokens >= req.max_tokens:
        return FinishReason.LENGTH, None
    return None
