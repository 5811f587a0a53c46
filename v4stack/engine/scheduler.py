"""Which requests run in the next step and how many tokens each computes. Never touches tensors: it moves
token counters and asks the cache manager for blocks; the model runner executes what it decides."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from v4stack.engine.cache_manager import CacheOps, KVCacheManager
from v4stack.engine.config import SchedulerConfig
from v4stack.engine.request import FinishReason, Request, RequestStatus


@dataclass(frozen=True)
class ScheduledRequest:
    """``num_new`` tokens of ``request`` from position ``start``; ``mtp_start``: first position of the MTP
    block's rows (== start unless it lags after a prefix hit); ``samples``: the step reaches the end of the
    known tokens, so its last logits are sampled."""

    request: Request
    start: int
    num_new: int
    mtp_start: int
    samples: bool


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    cache_ops: CacheOps = field(default_factory=CacheOps)
    preempted: list[Request] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new for s in self.scheduled)

    def __bool__(self) -> bool:
        return bool(self.scheduled)


class Scheduler:
    def __init__(self, config: SchedulerConfig, cache: KVCacheManager) -> None:
        self.config, self.cache = config, cache
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, req: Request) -> None:
        req.status = RequestStatus.WAITING
        self.waiting.append(req)

    def schedule(self) -> SchedulerOutput:
        # The rule (vLLM v1 style): there are no prefill and decode phases. Every request has
        # num_computed_tokens and num_tokens (prompt + output so far); a step gives each scheduled request some
        # new tokens that move num_computed_tokens toward num_tokens, within max_num_batched_tokens tokens and
        # max_num_seqs sequences. Running requests come first, oldest first: a decode costs one token, an
        # unfinished prefill takes what is left of the budget as its next chunk. Then waiting requests in
        # arrival order (FCFS, preempted ones at the front), each first served from the prefix cache, while
        # budget, sequence slots and cache blocks last; the first that does not fit stops admission (no
        # overtaking). When a running request cannot get blocks, the most recently started running request is
        # preempted (its blocks freed, its tokens recomputed later) until it can: the cache never runs out
        # under a request, and no request fails for lack of memory. No waiting request is admitted in a step
        # that preempted.
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        scheduled_ids: set[str] = set()
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            num_new = min(req.num_tokens - req.num_computed_tokens, budget)
            while not self.cache.allocate(req, num_new):
                victim = self.running[-1]
                self._preempt(victim, out)
                if victim is req:
                    break
            else:
                out.scheduled.append(self._entry(req, num_new))
                scheduled_ids.add(req.request_id)
                budget -= num_new
                i += 1
        while not out.preempted and self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            req = self.waiting[0]
            hit = self.cache.find_prefix(req)
            computed = hit.num_tokens if hit else req.num_computed_tokens
            num_new = min(req.num_tokens - computed, budget)
            if not self.cache.allocate(req, num_new, hit):
                break
            self.waiting.popleft()
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            out.scheduled.append(self._entry(req, num_new))
            budget -= num_new
        out.cache_ops = self.cache.take_ops()
        return out

    @staticmethod
    def _entry(req: Request, num_new: int) -> ScheduledRequest:
        start = req.num_computed_tokens
        return ScheduledRequest(req, start, num_new, req.num_mtp_computed_tokens, start + num_new == req.num_tokens)

    def _preempt(self, req: Request, out: SchedulerOutput) -> None:
        self.running.remove(req)
        self.cache.free(req)
        req.status = RequestStatus.PREEMPTED
        req.num_computed_tokens = req.num_mtp_computed_tokens = 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)
        out.preempted.append(req)

    def advance(self, entry: ScheduledRequest, mtp_ran: bool) -> None:
        """After the step ran: the request's tokens up to start + num_new are in the cache."""
        req = entry.request
        req.num_computed_tokens = entry.start + entry.num_new
        req.num_mtp_computed_tokens = req.num_computed_tokens if mtp_ran else req.num_mtp_computed_tokens
        self.cache.cache_full_blocks(req)

    def finish(self, req: Request, reason: FinishReason, stop_reason: str | int | None = None,
               error: str | None = None) -> None:
        """End a request wherever it is (running, waiting) and give back its blocks at once."""
        if req.is_finished:
            return
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.cache.free(req)
        req.status, req.finish_reason, req.stop_reason, req.error = RequestStatus.FINISHED, reason, stop_reason, error
