"""The synchronous engine core: admits requests, steps the scheduler and the model runner, turns sampled ids
into outputs. ``LLM`` (offline) and ``AsyncLLMEngine`` (the server's) drive it.

A request that cannot be served (empty or out-of-vocabulary prompt, prompt + max_tokens beyond the context
limit, more cache than the whole budget, a full waiting queue, invalid parameters) is refused at
``add_request`` with a one-line ``ParameterError``/``EngineFullError``, never half-run. An exception inside a
step finishes the requests of that step with finish_reason "error" and the engine carries on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from v4stack.cache.specs import CacheSpecs
from v4stack.cache.tensors import CacheTensors
from v4stack.cache.window_blocks import sliding_pool_blocks
from v4stack.config import validation as check
from v4stack.config.numerics import Numerics
from v4stack.engine.cache_manager import KVCacheManager
from v4stack.engine.config import DEFAULT_CPU_CACHE_BYTES, DEFAULT_CPU_CACHE_FRACTION, EngineConfig
from v4stack.engine.detokenizer import Detokenizer
from v4stack.engine.model_runner import ModelRunner, StepResult
from v4stack.engine.outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from v4stack.engine.request import FinishReason, Request, stop_decision
from v4stack.engine.sampling_params import SamplingParams
from v4stack.engine.scheduler import Scheduler, SchedulerOutput
from v4stack.engine.structured import StructuredBackend
from v4stack.model import DeepseekV4

log = logging.getLogger(__name__)

SEED_SPACE = 1 << 62  # seeds drawn for requests that give none


class EngineFullError(RuntimeError):
    """The waiting queue is full (the server answers 503)."""


@dataclass
class EngineStats:
    num_steps: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    num_preemptions: int = 0
    mtp_drafts: int = 0
    mtp_accepted: int = 0
    step_seconds: float = 0.0


@dataclass
class _Tracked:
    """Per-request output bookkeeping (detokenizer, logprobs) and which parent/index it belongs to."""

    request: Request
    parent: str
    index: int
    prompt: str | None
    detok: Detokenizer | None
    logprobs: list[dict[int, Logprob]] | None = None
    cumulative_logprob: float | None = None
    draft: int | None = None  # MTP draft for the next token (acceptance statistics)
    new_ids: list[int] = field(default_factory=list)
    new_logprobs: list[dict[int, Logprob]] = field(default_factory=list)


def engine_model_config(model_dir: str | Path):
    """The parsed config of a checkpoint (``ModelConfig`` for V4, ``V41Config`` for V4.1; both run in this engine),
    read before any weights so that a bad file is refused with one line."""
    from v4stack.config.family import is_v41, parse_config, read_config_json
    from v4stack.config.model_config import ConfigError, ModelConfig

    try:
        raw = read_config_json(model_dir)
    except (ConfigError, OSError):
        raw = None  # ModelConfig.from_file below names what is wrong with the file
    if isinstance(raw, dict) and is_v41(raw):
        return parse_config(raw)
    return ModelConfig.from_file(model_dir)


def check_mtp(cfg, enable_mtp: bool) -> None:
    """Refuse ``enable_mtp`` for a DeepSeek-V4.1 model with one line (before any weights load, when called with
    the parsed config): the engine does not run its DSpark head yet."""
    from v4stack.config.v41_config import V41Config

    if enable_mtp and isinstance(cfg, V41Config):
        raise check.ParameterError("enable_mtp", True, "off for DeepSeek-V4.1: the engine does not run its DSpark "
                                   "head yet (speculative decoding); DeepseekV41.draft drafts on a hand-driven state")


def engine_op_table(platform, numerics: Numerics, cfg):
    """The op table a model runs with: the platform's table for the numerics mode. For DeepSeek-V4.1 the
    platform's reference table on purpose: the fast table is validated against V4's golden cases only, and the
    reference ops compute every numerics mode (fast's quantisation points included), only slower."""
    from v4stack.config.v41_config import V41Config

    return platform.op_table() if isinstance(cfg, V41Config) else platform.op_table(numerics)


def size_cache(specs: CacheSpecs, config: EngineConfig, available_bytes: int) -> tuple[dict[str, int], int]:
    """Blocks per pool group and state slots for a budget. Sliding groups get what max_num_seqs requests need
    (a window each + one step's rows, ``cache.window_blocks``), doubled with prefix caching so recent windows
    stay findable; whole-sequence groups share the rest with one block count (a request holds as many c4 as c128 blocks)."""
    sc, cc = config.scheduler, config.cache
    slots = sc.max_num_seqs
    budget = cc.memory_bytes
    if budget is None:
        budget = int(min(DEFAULT_CPU_CACHE_BYTES, DEFAULT_CPU_CACHE_FRACTION * available_bytes))
    b = specs.block_size
    num: dict[str, int] = {}
    sliding = [p for p in specs.pools if p.sliding_window is not None]
    whole = [p for p in specs.pools if p.sliding_window is None]
    for p in sliding:  # the planner counts the same blocks (cache.window_blocks)
        num[p.name] = sliding_pool_blocks(p.sliding_window, b, slots, sc.max_num_batched_tokens,
                                          cc.enable_prefix_caching)
    used = sum(num[p.name] * p.bytes_per_block for p in sliding) + slots * specs.state_bytes_per_sequence
    per_block = sum(p.bytes_per_block for p in whole)
    if cc.num_blocks is not None:
        count = cc.num_blocks
    elif per_block:
        count = (budget - used) // per_block
        if count < 1:
            raise check.ParameterError("kv_cache_memory", budget, f"at least {used + per_block} bytes for this "
                                       f"model and max_num_seqs={slots}")
    else:
        count = 0
    for p in whole:
        num[p.name] = int(count)
    return num, slots


class LLMEngine:
    def __init__(self, model: DeepseekV4, tokenizer, config: EngineConfig | None = None,
                 available_bytes: int | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = config = config or EngineConfig()
        self.max_model_len = check.context_limit(model.cfg.max_position_embeddings, config.max_model_len)
        check_mtp(model.cfg, config.enable_mtp)
        specs = model.cache_specs(config.cache.block_size, prefix_tails=config.cache.enable_prefix_caching,
                                  with_mtp=config.enable_mtp)
        if available_bytes is None:
            from v4stack.platforms import get_platform
            available_bytes = get_platform(config.platform).memory_info().free_bytes
        num_blocks, slots = size_cache(specs, config, available_bytes)
        self.tensors = CacheTensors(specs, num_blocks, slots, model.device)
        self.cache = KVCacheManager(specs, num_blocks, slots, config.cache.enable_prefix_caching)
        self.scheduler = Scheduler(config.scheduler, self.cache)
        self.runner = ModelRunner(model, self.tensors, config.enable_mtp)
        self.stats = EngineStats()
        self._tracked: dict[str, _Tracked] = {}  # child request id -> bookkeeping
        self._children: dict[str, list[str]] = {}  # request id -> child ids (n completions)
        self._seeds = torch.Generator().manual_seed(config.seed)
        self.eos_token_id = getattr(tokenizer, "eos_id", model.cfg.eos_token_id)
        # constrained decoding needs the tokenizer's vocabulary (llguidance reads tokenizer.json)
        self.structured = StructuredBackend(tokenizer.to_json(), self.eos_token_id) \
            if hasattr(tokenizer, "to_json") else None

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, config: EngineConfig | None = None) -> "LLMEngine":
        from v4stack.platforms import get_platform
        from v4stack.engine.tokenizer import Tokenizer
        from v4stack.modelio.loader import load_model

        config = config or EngineConfig()
        cfg = engine_model_config(model_dir)  # refuse a bad config before reading weights
        check_mtp(cfg, config.enable_mtp)
        platform = get_platform(config.platform)
        numerics = Numerics.from_name(config.numerics)
        model = load_model(model_dir, numerics, ops=engine_op_table(platform, numerics, cfg),
                           device=platform.device(), progress=False, engram=config.engram)
        return cls(model, Tokenizer(model_dir), config, platform.memory_info().free_bytes)

    # ---- requests -------------------------------------------------------------------------------------
    def encode(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str):
            raise check.ParameterError("prompt", type(prompt).__name__, "a string or a list of token ids")
        return self.tokenizer.encode(prompt)

    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise a one-line ParameterError if the request cannot be served; nothing is queued."""
        if not prompt_ids:
            raise check.ParameterError("prompt", prompt_ids, "at least one token")
        vocab = self.model.cfg.vocab_size
        bad = next((t for t in prompt_ids if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab), None)
        if bad is not None:
            raise check.ParameterError("prompt token id", bad, f"integers in [0, {vocab})")
        max_tokens = params.max_tokens if params.max_tokens is not None else max(self.max_model_len - len(prompt_ids), 0)
        check.check_context(len(prompt_ids), max(max_tokens, 1), self.max_model_len)
        total = len(prompt_ids) + max_tokens
        if not self.cache.can_ever_fit(total, self.config.scheduler.max_num_batched_tokens):
            raise check.ParameterError("max_tokens", params.max_tokens, f"prompt + max_tokens that fit in the cache "
                                       f"({self.cache_capacity_tokens()} tokens for one request)")

    def cache_capacity_tokens(self) -> int:
        whole = [p.num_blocks for g, p in self.cache.pools.items() if self.cache.window[g] is None]
        return min(whole) * self.cache.block_size if whole else self.max_model_len

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams | None = None) -> None:
        params = params or SamplingParams()
        if request_id in self._children:
            raise check.ParameterError("request_id", request_id, "an id not already in use")
        ids = list(prompt) if isinstance(prompt, (list, tuple)) else self.encode(prompt)
        self.check_request(ids, params)
        if params.guide is not None and self.structured is None:
            raise check.ParameterError("guide", "<grammar>", "an engine whose tokenizer has a tokenizer.json")
        if len(self.scheduler.waiting) + params.n > self.config.scheduler.max_waiting_requests:
            raise EngineFullError(f"the waiting queue is full ({self.config.scheduler.max_waiting_requests} requests)")
        children = []
        for index in range(params.n):
            child_id = request_id if params.n == 1 else f"{request_id}#{index}"
            seed = params.seed + index if params.seed is not None else \
                int(torch.randint(SEED_SPACE, (1,), generator=self._seeds))
            req = Request(child_id, ids, params, None if params.ignore_eos else self.eos_token_id, self.max_model_len,
                          generator=torch.Generator().manual_seed(seed))
            if params.guide is not None:
                req.guide = self.structured.new_guide(params.guide)
            detok = Detokenizer(self.tokenizer, params) if self.tokenizer is not None else None
            self._tracked[child_id] = _Tracked(req, request_id, index, prompt if isinstance(prompt, str) else None,
                                               detok, [] if params.logprobs is not None else None,
                                               0.0 if params.logprobs is not None else None)
            self.scheduler.add(req)
            children.append(child_id)
        self._children[request_id] = children

    def abort(self, request_id: str) -> bool:
        """Finish a request (all its completions) at once, freeing its cache; False if unknown or done."""
        children = self._children.pop(request_id, None)
        if children is None:
            return False
        for child in children:
            t = self._tracked.pop(child)
            self.scheduler.finish(t.request, FinishReason.ABORT)
        return True

    def has_unfinished(self) -> bool:
        return bool(self._children)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    # ---- stepping ---------------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Run one scheduler step; outputs of the requests that changed (new tokens or finished)."""
        sched = self.scheduler.schedule()
        self.stats.num_preemptions += len(sched.preempted)
        if not sched:
            return []
        t0 = time.perf_counter()
        now = time.monotonic()
        for e in sched.scheduled:
            e.request.first_scheduled_time = e.request.first_scheduled_time or now
        try:
            result = self.runner.execute(sched)
        except Exception as exc:  # one bad step must not take the engine (and every other request) down
            log.exception("engine step failed; finishing the %d requests it ran", len(sched.scheduled))
            return self._fail_step(sched, exc)
        self.stats.num_steps += 1
        self.stats.step_seconds += time.perf_counter() - t0
        return self._process(sched, result)

    def _fail_step(self, sched: SchedulerOutput, exc: Exception) -> list[RequestOutput]:
        touched = set()
        for e in sched.scheduled:
            self.scheduler.finish(e.request, FinishReason.ERROR, error=f"{type(exc).__name__}: {exc}")
            touched.add(e.request.request_id)
        return self._outputs(touched)

    def _process(self, sched: SchedulerOutput, result: StepResult) -> list[RequestOutput]:
        touched = set()
        now = time.monotonic()
        for e in sched.scheduled:
            req = e.request
            self.scheduler.advance(e, result.mtp_ran)
            if e.start < req.num_prompt_tokens:
                self.stats.prompt_tokens += min(req.num_prompt_tokens, e.start + e.num_new) - e.start
            sampled = result.sampled.get(req.request_id)
            if sampled is None:
                continue
            t = self._tracked[req.request_id]
            self._account_draft(t, sampled.token_id, result.drafts.get(req.request_id))
            req.output_token_ids.append(sampled.token_id)
            if req.guide is not None:
                req.guide.accept(sampled.token_id)
            self.stats.generation_tokens += 1
            req.first_token_time = req.first_token_time or now
            req.last_token_time = now
            t.new_ids.append(sampled.token_id)
            if sampled.logprobs is not None:
                self._record_logprobs(t, sampled.logprobs)
            self._check_stop(t, sampled.token_id)
            touched.add(req.request_id)
        return self._outputs(touched)

    def _account_draft(self, t: _Tracked, token: int, next_draft: int | None) -> None:
        if t.draft is not None:
            self.stats.mtp_drafts += 1
            self.stats.mtp_accepted += int(t.draft == token)
        t.draft = next_draft

    def _record_logprobs(self, t: _Tracked, lp) -> None:
        decode = (lambda i: self.tokenizer.decode([i], skip_special_tokens=False)) if self.tokenizer else str
        entry = {lp.token_id: Logprob(lp.logprob, lp.rank, decode(lp.token_id))}
        for rank, (tok, value) in enumerate(lp.top, start=1):
            entry.setdefault(tok, Logprob(value, rank, decode(tok)))
        t.logprobs.append(entry)
        t.new_logprobs.append(entry)
        t.cumulative_logprob += lp.logprob

    def _check_stop(self, t: _Tracked, token: int) -> None:
        stop_str = t.detok.add(token) if t.detok is not None else None
        decision = stop_decision(t.request, token, stop_str)
        if decision is not None:
            reason, stop_reason = decision
            self.scheduler.finish(t.request, reason, stop_reason=stop_reason)

    # ---- outputs ----------------------------------------------------------------------------------------
    def _completion(self, t: _Tracked) -> CompletionOutput:
        req = t.request
        done = req.is_finished
        if done and t.detok is not None:
            t.detok.flush()
        text_delta = t.detok.take_new_text(done) if t.detok is not None else ""
        out = CompletionOutput(
            index=t.index, text=t.detok.text[:t.detok.emitted] if t.detok is not None else "",
            token_ids=list(req.output_token_ids), cumulative_logprob=t.cumulative_logprob, logprobs=t.logprobs,
            finish_reason=req.finish_reason.value if done else None, stop_reason=req.stop_reason,
            text_delta=text_delta, token_ids_delta=t.new_ids, logprobs_delta=t.new_logprobs, error=req.error)
        t.new_ids, t.new_logprobs = [], []
        return out

    def _outputs(self, touched: set[str]) -> list[RequestOutput]:
        by_parent: dict[str, list[_Tracked]] = {}
        for child in touched:
            t = self._tracked.get(child)
            if t is not None:
                by_parent.setdefault(t.parent, []).append(t)
        outs = []
        for parent, changed in by_parent.items():
            children = [self._tracked[c] for c in self._children[parent]]
            finished = all(c.request.is_finished for c in children)
            first = children[0].request
            metrics = RequestMetrics(first.arrival_time, first.first_scheduled_time, first.first_token_time,
                                     first.last_token_time, time.monotonic() if finished else None)
            listed = children if finished else sorted(changed, key=lambda c: c.index)  # the last one lists all
            outs.append(RequestOutput(parent, changed[0].prompt, first.prompt_token_ids,
                                      [self._completion(t) for t in listed], finished, first.num_cached_tokens,
                                      metrics))
            if finished:
                for c in self._children.pop(parent):
                    self._tracked.pop(c)
        return outs
