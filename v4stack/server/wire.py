"""OpenAI wire shapes shared by the endpoints: SSE framing, usage, and logprobs in the chat and the legacy
completions layouts (built from the engine's per-token ``{token_id: Logprob}`` entries, whose first key is
the sampled token)."""

from __future__ import annotations

import json

DONE = "data: [DONE]\n\n"


def sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int, reasoning_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens}}


def _entry(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _top(entry: dict, n: int) -> list:
    """The n most likely tokens of one position (rank 1..n), most likely first."""
    return sorted((lp for lp in entry.values() if lp.rank <= n), key=lambda lp: lp.rank)


def chat_logprobs(completion, top_n: int) -> list[dict]:
    """``choices[i].logprobs.content`` items for the tokens of one update."""
    items = []
    for entry in completion.logprobs_delta:
        chosen = next(iter(entry.values()))
        item = _entry(chosen.decoded_token, chosen.logprob)
        item["top_logprobs"] = [_entry(lp.decoded_token, lp.logprob) for lp in _top(entry, top_n)]
        items.append(item)
    return items


def completion_logprobs(entries: list[dict], top_n: int, text_start: int = 0) -> dict:
    """The legacy ``choices[i].logprobs`` object: tokens, token_logprobs, top_logprobs, text_offset."""
    tokens, values, tops, offsets, offset = [], [], [], [], text_start
    for entry in entries:
        chosen = next(iter(entry.values()))
        tokens.append(chosen.decoded_token)
        values.append(chosen.logprob)
        tops.append({lp.decoded_token: lp.logprob for lp in _top(entry, top_n)})
        offsets.append(offset)
        offset += len(chosen.decoded_token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
