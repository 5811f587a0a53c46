"""Request fields -> ``SamplingParams`` (shared by chat and text completions).

Defaults come from the checkpoint's generation_config.json (temperature, top_p), as in vLLM; the request
overrides them. Without ``max_tokens`` a request may generate up to the context limit, bounded by what one
request can hold in the cache. Constrained decoding (``response_format`` or a forced tool call) becomes a
``GuideSpec``; in thinking mode it starts after ``</think>``.
"""

from __future__ import annotations

import asyncio

from v4stack.config.validation import ParameterError
from v4stack.engine.sampling_params import SamplingParams
from v4stack.engine.structured import GuideSpec, json_object_grammar, json_schema_grammar
from v4stack.server.models import ServedModel
from v4stack.server.protocol import ResponseFormat, _Sampling


def response_format_grammar(fmt: ResponseFormat | None) -> str | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return json_object_grammar()
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise ParameterError("response_format.json_schema", None, "an object with a 'schema' for type json_schema")
    return json_schema_grammar(fmt.json_schema.schema_)


async def prepare_guide(served: ServedModel, guide: GuideSpec | None) -> None:
    """Build the engine's grammar tokenizer off the event loop before the first constrained request runs
    (otherwise the engine thread would build it inside a step, stalling every request for seconds)."""
    backend = served.engine.engine.structured
    if guide is not None and guide.grammar is not None and backend is not None:
        await asyncio.to_thread(backend.tokenizer)


def default_max_tokens(served: ServedModel, prompt_len: int) -> int:
    """Room left for output: the context limit, and the cache one request can hold, minus the prompt."""
    engine = served.engine.engine
    room = min(served.max_model_len, engine.cache_capacity_tokens()) - prompt_len
    return max(room, 1)


def build_params(req: _Sampling, served: ServedModel, prompt_len: int, max_tokens: int | None, logprobs: int | None,
                 guide: GuideSpec | None, skip_special_tokens: bool) -> SamplingParams:
    """SamplingParams for one request; ParameterError (-> 400) names the first bad field."""
    given = {k: getattr(req, k) for k in ("temperature", "top_p", "top_k", "min_p") if getattr(req, k) is not None}
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if max_tokens is not None and max_tokens < 1:
        raise ParameterError("max_tokens", max_tokens, "an integer >= 1")
    return SamplingParams(
        **(served.sampling_defaults | given), n=req.n, seed=req.seed, stop=stop,
        stop_token_ids=tuple(req.stop_token_ids or ()), presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty, repetition_penalty=req.repetition_penalty,
        max_tokens=max_tokens if max_tokens is not None else default_max_tokens(served, prompt_len),
        min_tokens=req.min_tokens, ignore_eos=req.ignore_eos, logprobs=logprobs, guide=guide,
        skip_special_tokens=skip_special_tokens)
