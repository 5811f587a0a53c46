"""Constrained decoding: llguidance grammars turned into per-request token masks for the sampler.

A request's :class:`GuideSpec` (in ``SamplingParams.guide``) says what its output must look like:

* ``grammar``: an llguidance grammar (from :func:`json_schema_grammar`, :func:`json_object_grammar` or a Lark
  text), or None for no grammar;
* ``gate_token_id``: the grammar applies only after this token (``</think>`` in thinking mode: the reasoning
  is free, the answer after it is constrained); None: from the first output token;
* ``gate_budget``: at most this many tokens before the gate token; then the gate token is forced (a thinking
  budget). None: unbounded.

The engine makes one :class:`Guide` per completion at admission (each of ``n`` completions has its own grammar
state) and calls ``accept`` with every sampled token; the sampler asks ``allowed(vocab)`` for a boolean mask
[V] (None = unconstrained now) before it draws. Once the grammar is complete only EOS is allowed. The scheduler
never sees any of this (it stays tensor-free).

Knows: llguidance and token ids. Does not know: HTTP, chat formats or the model.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import torch

from v4stack.config.validation import ParameterError

BITS_PER_BYTE = 8  # llguidance's compute_bitmask packs one bit per token, little-endian within each byte
# JSON is generated compact, as json.dumps writes it: with flexible whitespace a model can pad an answer with
# blanks until max_tokens (a weak or random model does exactly that)
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class GuideSpec:
    grammar: str | None = None
    gate_token_id: int | None = None
    gate_budget: int | None = None

    def __post_init__(self) -> None:
        if self.grammar is not None:
            problem = _validate(self.grammar)
            if problem:
                raise ParameterError("response_format", "<grammar>", f"a grammar llguidance accepts ({problem})")
        if self.gate_budget is not None and (isinstance(self.gate_budget, bool) or not isinstance(self.gate_budget, int)
                                             or self.gate_budget < 0):
            raise ParameterError("thinking_token_budget", self.gate_budget, "an integer >= 0")


def _validate(grammar: str) -> str:
    import llguidance

    message = llguidance.LLMatcher.validate_grammar(grammar)
    return "" if not message or message.startswith("WARNING") else message.splitlines()[0][:200]


def json_schema_grammar(schema: Any) -> str:
    """The llguidance grammar of a JSON schema; ParameterError (param ``response_format``) if it is unusable."""
    import llguidance

    if not isinstance(schema, dict):
        raise ParameterError("response_format.json_schema.schema", schema, "a JSON schema object")
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_LAYOUT)
    except (ValueError, TypeError) as exc:
        raise ParameterError("response_format.json_schema.schema", "<schema>", f"a valid JSON schema ({exc})") from None
    problem = _validate(grammar)
    if problem:
        raise ParameterError("response_format.json_schema.schema", "<schema>", f"a schema llguidance supports "
                             f"({problem})")
    return grammar


def json_object_grammar() -> str:
    """Any JSON object (OpenAI's ``response_format: {"type": "json_object"}``)."""
    return json_schema_grammar({"type": "object"})


class StructuredBackend:
    """One per engine: the llguidance tokenizer of the engine's vocabulary, built on first use (it walks the
    whole vocabulary: seconds for V4's 129K tokens), shared by every guide."""

    def __init__(self, tokenizer_json: str, eos_token_id: int) -> None:
        self._json, self._eos = tokenizer_json, eos_token_id
        self._tokenizer = None
        self._lock = threading.Lock()

    def tokenizer(self):
        with self._lock:
            if self._tokenizer is None:
                import llguidance

                self._tokenizer = llguidance.LLTokenizer(self._json, eos_token=self._eos)
            return self._tokenizer

    def new_guide(self, spec: GuideSpec) -> "Guide":
        return Guide(spec, self, self._eos)


class Guide:
    """The grammar state of one completion (see the module docstring for the contract)."""

    def __init__(self, spec: GuideSpec, backend: StructuredBackend, eos_token_id: int) -> None:
        self.spec, self.eos_token_id = spec, eos_token_id
        self._backend = backend
        self._matcher = None
        self.gate_open = spec.gate_token_id is None
        self.tokens_before_gate = 0

    def _grammar_matcher(self):
        if self._matcher is None and self.spec.grammar is not None:
            import llguidance

            self._matcher = llguidance.LLMatcher(self._backend.tokenizer(), self.spec.grammar)
        return self._matcher

    def allowed(self, vocab_size: int) -> torch.Tensor | None:
        """Boolean mask [vocab_size] of the tokens allowed next, or None when nothing is constrained now."""
        if not self.gate_open:
            budget = self.spec.gate_budget
            if budget is None or self.tokens_before_gate < budget:
                return None
            return self._only(self.spec.gate_token_id, vocab_size)
        matcher = self._grammar_matcher()
        if matcher is None:
            return None
        if matcher.is_stopped():  # complete (or in error): the only way out is EOS
            return self._only(self.eos_token_id, vocab_size)
        packed = torch.frombuffer(bytearray(matcher.compute_bitmask()), dtype=torch.uint8)  # [ceil(V_tok / 8)]
        shifts = torch.arange(BITS_PER_BYTE, dtype=torch.uint8)
        bits = ((packed.unsqueeze(-1) >> shifts) & 1).flatten().bool()  # [8 * ceil(V_tok / 8)], token order
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        n = min(vocab_size, bits.shape[0])
        mask[:n] = bits[:n]  # model rows beyond the tokenizer's vocabulary stay disallowed
        if not mask.any():  # a grammar dead end: end the output rather than sample from nothing
            return self._only(self.eos_token_id, vocab_size)
        return mask

    @staticmethod
    def _only(token_id: int, vocab_size: int) -> torch.Tensor:
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[token_id] = True
        return mask

    def accept(self, token_id: int) -> None:
        """Advance past one sampled token."""
        if not self.gate_open:
            if token_id == self.spec.gate_token_id:
                self.gate_open = True
            else:
                self.tokens_before_gate += 1
            return
        matcher = self._grammar_matcher()
        if matcher is not None and not matcher.is_stopped():
            matcher.consume_token(token_id)
