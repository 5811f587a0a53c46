"""What a request asks of the sampler and of the stop rules: vLLM's ``SamplingParams`` fields and meanings.

Frozen and validated on construction (``__post_init__``) with the shared one-line checks of
``config.validation``, so the CLI, the engine and the server refuse a bad value before any work starts.

Meanings (as in vLLM / the OpenAI API):
* ``temperature`` 0 = greedy; ``top_p`` in (0, 1]; ``top_k`` 0 or -1 = off; ``min_p`` in [0, 1];
* ``repetition_penalty`` > 0 (1 = off; logits of seen tokens divided if > 0, multiplied if < 0, over prompt
  and output); ``presence_penalty`` / ``frequency_penalty`` in [-2, 2] over output tokens only;
* ``seed``: a per-request generator, so the same tokens come out whatever else is in the batch;
* ``stop`` strings (the text is cut before the stop string unless ``include_stop_str_in_output``),
  ``stop_token_ids``, ``ignore_eos``, ``max_tokens`` (None: up to the context limit), ``min_tokens``
  (stop tokens and EOS are suppressed until then);
* ``logprobs``: number of top log-probabilities returned per generated token (the sampled one is always
  included); ``n``: independent completions of one prompt;
* ``guide``: constrained decoding (a grammar, optionally after a gate token such as ``</think>``), see
  ``engine/structured.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from v4stack.config import validation as check
from v4stack.config.model_config import ConfigError
from v4stack.engine.structured import GuideSpec

MAX_LOGPROBS = 20  # OpenAI's top_logprobs upper bound
MAX_N = 128  # completions per prompt; bounds the work one request can ask for
PENALTY_LIMIT = 2.0  # presence / frequency penalties live in [-2, 2] (OpenAI)
GENERATION_CONFIG = "generation_config.json"  # HF convention; vLLM takes its defaults from it too


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # DeepSeek-V4 generation_config default
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None
    skip_special_tokens: bool = True
    guide: GuideSpec | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)  # passed through untouched

    def __post_init__(self) -> None:
        check.integer("n", self.n, 1, MAX_N)
        check.finite_float("temperature", self.temperature, 0.0)
        check.finite_float("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        top_k = check.integer("top_k", self.top_k, -1)
        check.finite_float("min_p", self.min_p, 0.0, 1.0)
        check.finite_float("repetition_penalty", self.repetition_penalty, 0.0, lo_open=True)
        check.finite_float("presence_penalty", self.presence_penalty, -PENALTY_LIMIT, PENALTY_LIMIT)
        check.finite_float("frequency_penalty", self.frequency_penalty, -PENALTY_LIMIT, PENALTY_LIMIT)
        if self.seed is not None:
            check.integer("seed", self.seed, -(1 << 63), (1 << 64) - 1)
        if self.max_tokens is not None:
            check.integer("max_tokens", self.max_tokens, 1)
        check.integer("min_tokens", self.min_tokens, 0, self.max_tokens)
        if self.logprobs is not None:
            check.integer("logprobs", self.logprobs, 0, MAX_LOGPROBS)
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        for s in stop:
            if not isinstance(s, str) or not s:
                raise check.ParameterError("stop", s, "non-empty strings")
        for t in self.stop_token_ids:
            check.integer("stop_token_ids", t, 0)
        if self.guide is not None and not isinstance(self.guide, GuideSpec):
            raise check.ParameterError("guide", type(self.guide).__name__, "a GuideSpec or None")
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        object.__setattr__(self, "top_k", 0 if top_k == -1 else top_k)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def max_stop_len(self) -> int:
        """Longest stop string in characters: how much text must be held back while streaming."""
        return max((len(s) for s in self.stop), default=0)


def checkpoint_sampling_defaults(model_dir: Path) -> dict:
    """``temperature`` / ``top_p`` recommended by the checkpoint's generation_config.json ({} if none)."""
    path = Path(model_dir) / GENERATION_CONFIG
    if not path.exists():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    given = {k: cfg[k] for k in ("temperature", "top_p") if k in cfg}
    try:
        SamplingParams(**given)   # the same checks as a request's own values
    except check.ParameterError as exc:   # name the file: the user did not type this value
        raise ConfigError(f"{path}: {exc}") from None
    return {k: float(v) for k, v in given.items()}
