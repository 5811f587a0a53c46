"""``POST /v1/chat/completions``: messages -> DeepSeek-V4 prompt (``v4stack.chat``) -> engine -> parsed
reasoning / content / tool calls, whole or as SSE chunks.

Mode: a tier sets (thinking, effort); ``chat_template_kwargs.thinking`` and ``reasoning_effort`` override it
(an effort alone turns thinking on); with neither, the checkpoint's chat-format default applies. Tools:
``tool_choice`` auto (default; tools rendered, calls parsed), none (tools not rendered, no calls returned),
required or a named function (the answer is constrained to a DSML tool block by a grammar, see
``tool_grammar.py``). ``response_format`` json_object / json_schema constrains the answer; in thinking mode
the grammar starts after ``</think>`` so the reasoning stays free. Usage counts reasoning tokens (output
tokens up to and including ``</think>``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from v4stack.chat import (ContentDelta, FinishDelta, ReasoningDelta, StreamParser, ToolCallDelta, aggregate,
                          encode_messages)
from v4stack.chat.deltas import coalesce
from v4stack.config.validation import ParameterError
from v4stack.engine.structured import GuideSpec
from v4stack.server.errors import bad_request, from_exception
from v4stack.server.models import ModelRegistry, Route, ServedModel
from v4stack.server.protocol import ChatCompletionRequest
from v4stack.server.sampling import build_params, prepare_guide, response_format_grammar
from v4stack.server.streams import open_stream, until_disconnected
from v4stack.server.tool_grammar import tool_call_grammar
from v4stack.server.wire import DONE, chat_logprobs, sse, usage


def resolve_mode(route: Route, req: ChatCompletionRequest) -> tuple[bool, object]:
    """(thinking, effort) for a request on a route; ChatInputError on an effort the format does not know."""
    kwargs = req.chat_template_kwargs or {}
    thinking = kwargs.get("thinking", kwargs.get("enable_thinking"))
    if thinking is not None and not isinstance(thinking, bool):
        raise ParameterError("chat_template_kwargs.thinking", thinking, "true or false")
    fmt = route.served.fmt
    if thinking is None and req.reasoning_effort is None and route.thinking is not None:
        fmt.effort.check(route.effort)
        return route.thinking, route.effort if route.thinking else None
    effort = req.reasoning_effort if req.reasoning_effort is not None else (route.effort if thinking else None)
    return fmt.request_mode(thinking, effort)


@dataclass
class ToolPlan:
    """What the request's tools and tool_choice mean for the prompt, the grammar and the output."""

    rendered: list | None
    grammar: str | None = None
    drop_calls: bool = False


def plan_tools(served: ServedModel, req: ChatCompletionRequest) -> ToolPlan:
    tools, choice = req.tools, req.tool_choice
    if choice is None or choice == "auto":
        return ToolPlan(tools)
    if choice == "none":
        return ToolPlan(None, drop_calls=True)
    if not tools:
        raise ParameterError("tool_choice", choice, "'auto' or 'none' when no tools are given")
    functions = [t.get("function") for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if choice != "required":
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if not isinstance(name, str):
            raise ParameterError("tool_choice", choice, "'none', 'auto', 'required' or "
                                 "{'type': 'function', 'function': {'name': NAME}}")
        functions = [f for f in functions if f.get("name") == name]
        if not functions:
            raise ParameterError("tool_choice.function.name", name, "the name of one of the given tools")
    if any(not isinstance(f.get("name"), str) for f in functions):
        raise ParameterError("tools", "<tool without a name>", "functions with names")
    grammar = tool_call_grammar(served.fmt, served.token_id(served.fmt.dsml), functions,
                                allow_many=choice == "required" and req.parallel_tool_calls)
    return ToolPlan(tools, grammar)


@dataclass
class _Choice:
    """One completion's parsing state."""

    parser: StreamParser
    think_close_id: int | None
    in_reasoning: bool
    drop_calls: bool
    tokens: int = 0
    reasoning_tokens: int = 0
    finished: bool = False
    deltas: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    error: str | None = None

    def update(self, c) -> list:
        for t in c.token_ids_delta:
            self.tokens += 1
            if self.in_reasoning:
                self.reasoning_tokens += 1
                self.in_reasoning = t != self.think_close_id
        out = self.parser.feed(c.text_delta) if c.text_delta else []
        if c.finish_reason is not None and not self.finished:
            self.finished = True
            if c.finish_reason in ("error", "abort"):
                self.error = c.error or c.finish_reason
            out += self.parser.finish("length" if c.finish_reason == "length" else "stop")
        if self.drop_calls:
            out = [FinishDelta("stop") if isinstance(d, FinishDelta) and d.reason == "tool_calls" else d
                   for d in out if not isinstance(d, ToolCallDelta)]
        out = coalesce(out)
        self.deltas += out
        return out


def _delta_json(d) -> dict:
    if isinstance(d, ReasoningDelta):
        return {"reasoning_content": d.text}
    if isinstance(d, ContentDelta):
        return {"content": d.text}
    return {"tool_calls": [d.to_openai()]}


class ChatCompletions:
    def __init__(self, registry: ModelRegistry, metrics) -> None:
        self.registry, self.metrics = registry, metrics

    async def __call__(self, req: ChatCompletionRequest, raw: Request) -> Response:
        route = self.registry.resolve(req.model)
        served = route.served
        if served.missing_chat_tokens:
            raise bad_request(f"model {req.model!r} cannot chat: its tokenizer has no DeepSeek-V4 chat tokens ("
                              + ", ".join(served.missing_chat_tokens) + "); use /v1/completions with it, or serve "
                              "a chat-capable checkpoint", param="model", code="chat_unsupported")
        thinking, effort = resolve_mode(route, req)
        tools = plan_tools(served, req)
        prompt = encode_messages(req.messages, tools.rendered, fmt=served.fmt, thinking=thinking,
                                 reasoning_effort=effort)
        ids = served.tokenizer.encode(prompt, add_bos=False)  # BOS is part of the encoded text
        grammar = response_format_grammar(req.response_format)
        if grammar is not None and tools.grammar is not None:
            raise ParameterError("response_format", req.response_format.type,
                                 "'text' when tool_choice forces a tool call")
        grammar = grammar or tools.grammar
        think_close = served.token_id(served.fmt.think_close)
        budget = req.thinking_token_budget if thinking else None
        guide = GuideSpec(grammar, think_close if thinking else None, budget) \
            if grammar is not None or budget is not None else None
        if req.top_logprobs is not None and not req.logprobs:
            raise ParameterError("top_logprobs", req.top_logprobs, "null unless logprobs is true")
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        params = build_params(req, served, len(ids), max_tokens, logprobs, guide, skip_special_tokens=False)
        await prepare_guide(served, guide)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        stream = await open_stream(served.engine, rid, ids, params)
        choices = [_Choice(StreamParser(served.fmt, thinking), think_close, thinking, tools.drop_calls)
                   for _ in range(params.n)]
        track = self.metrics.track(served.name)
        ctx = _Context(rid, int(time.time()), req.model, ids, choices, track, req.top_logprobs or 0)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self._stream(stream, ctx, include_usage), media_type="text/event-stream")
        return await until_disconnected(raw, self._collect(stream, ctx))

    @staticmethod
    async def _updates(stream, ctx: "_Context"):
        """The one loop over the engine's outputs both paths share: counts tokens, feeds each completion's
        deltas to its choice's parser, keeps the last output in ``ctx.last``; yields (completion, choice,
        new parsed deltas, its chat logprobs or None)."""
        async for out in stream:
            ctx.last = out
            ctx.track.tokens(sum(len(c.token_ids_delta) for c in out.outputs))
            for c in out.outputs:
                ch = ctx.choices[c.index]
                lp = chat_logprobs(c, ctx.top_logprobs) if c.logprobs_delta else None
                yield c, ch, ch.update(c), lp

    async def _collect(self, stream, ctx: "_Context") -> Response:
        async for _, ch, _, lp in self._updates(stream, ctx):
            ch.logprobs += lp or []
        last = ctx.last
        ctx.finish(last)
        failed = next((ch.error for ch in ctx.choices if ch.error), None)
        if failed:
            return from_exception(RuntimeError(failed)).response()
        body = {"id": ctx.rid, "object": "chat.completion", "created": ctx.created, "model": ctx.model,
                "choices": [], "usage": ctx.usage(last)}
        for i, ch in enumerate(ctx.choices):
            msg = aggregate(ch.deltas)
            body["choices"].append({"index": i, "message": msg.to_openai(),
                                    "logprobs": {"content": ch.logprobs} if ch.logprobs or ctx.wants_logprobs(last)
                                    else None, "finish_reason": msg.finish_reason})
        return JSONResponse(body)

    async def _stream(self, stream, ctx: "_Context", include_usage: bool):
        def chunk(choices: list, usage_value=None, with_usage=include_usage) -> str:
            body = {"id": ctx.rid, "object": "chat.completion.chunk", "created": ctx.created, "model": ctx.model,
                    "choices": choices}
            if with_usage:
                body["usage"] = usage_value
            return sse(body)

        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None} for i in range(len(ctx.choices))])
        async for c, ch, deltas, lp in self._updates(stream, ctx):
            if ch.error:
                yield sse(from_exception(RuntimeError(ch.error)).body())
                yield DONE
                return
            texts = [d for d in deltas if not isinstance(d, FinishDelta)]
            if lp and not texts:  # tokens whose text is held back still report their logprobs
                yield chunk([{"index": c.index, "delta": {}, "logprobs": {"content": lp}, "finish_reason": None}])
            for k, d in enumerate(texts):
                yield chunk([{"index": c.index, "delta": _delta_json(d),
                              "logprobs": {"content": lp} if lp and k == 0 else None, "finish_reason": None}])
            for d in deltas:
                if isinstance(d, FinishDelta):
                    yield chunk([{"index": c.index, "delta": {}, "logprobs": None, "finish_reason": d.reason}])
        ctx.finish(ctx.last)
        if include_usage:
            yield chunk([], ctx.usage(ctx.last))
        yield DONE


@dataclass
class _Context:
    rid: str
    created: int
    model: str
    prompt_ids: list[int]
    choices: list[_Choice]
    track: object
    top_logprobs: int
    last: object = None  # the engine's latest RequestOutput (set by ChatCompletions._updates)

    def wants_logprobs(self, last) -> bool:
        return any(c.logprobs is not None for c in last.outputs) if last is not None else False

    def usage(self, last) -> dict:
        return usage(len(self.prompt_ids), sum(c.tokens for c in self.choices),
                     last.num_cached_tokens if last is not None else 0,
                     sum(c.reasoning_tokens for c in self.choices))

    def finish(self, last) -> None:
        reasons = [(c.deltas[-1].reason if c.deltas and isinstance(c.deltas[-1], FinishDelta) else "abort")
                   for c in self.choices]
        self.track.finish(reasons, len(self.prompt_ids), last.num_cached_tokens if last is not None else 0,
                          sum(c.tokens for c in self.choices))
