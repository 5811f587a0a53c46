"""``POST /v1/completions`` (legacy text completions): prompt text or token ids, one engine request per
prompt (each with ``n`` completions; choice index = prompt index * n + completion index), whole or as SSE.
The bundled demo model (no chat tokens) is served through this endpoint."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from v4stack.config.validation import ParameterError
from v4stack.engine.structured import GuideSpec
from v4stack.server.errors import from_exception
from v4stack.server.models import ModelRegistry
from v4stack.server.protocol import CompletionRequest
from v4stack.server.sampling import build_params, prepare_guide, response_format_grammar
from v4stack.server.streams import open_stream, until_disconnected
from v4stack.server.wire import DONE, completion_logprobs, sse, usage

MAX_PROMPTS = 64  # prompts in one request; each becomes its own engine request


def _prompts(prompt) -> list:
    """The request's prompts as a list of (text or None, token ids or text)."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise ParameterError("prompt", prompt, "a non-empty string, list of strings or token ids")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    return list(prompt)


class Completions:
    def __init__(self, registry: ModelRegistry, metrics) -> None:
        self.registry, self.metrics = registry, metrics

    async def __call__(self, req: CompletionRequest, raw: Request) -> Response:
        route = self.registry.resolve(req.model)
        served = route.served
        prompts = _prompts(req.prompt)
        if len(prompts) > MAX_PROMPTS:
            raise ParameterError("prompt", f"<{len(prompts)} prompts>", f"at most {MAX_PROMPTS} prompts")
        encoded = [served.engine.encode(p) if isinstance(p, str) else list(p) for p in prompts]
        grammar = response_format_grammar(req.response_format)
        guide = GuideSpec(grammar) if grammar is not None else None
        await prepare_guide(served, guide)
        rid = f"cmpl-{uuid.uuid4().hex}"
        streams = []
        try:
            for i, ids in enumerate(encoded):
                params = build_params(req, served, len(ids), req.max_tokens, req.logprobs, guide,
                                      skip_special_tokens=True)
                streams.append(await open_stream(served.engine, f"{rid}-{i}", ids, params))
        except Exception:
            for s in streams:
                await s.aclose()
            raise
        ctx = _Ctx(rid, int(time.time()), req, prompts, encoded, self.metrics.track(served.name))
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self._stream(streams, ctx, include_usage), media_type="text/event-stream")
        return await until_disconnected(raw, self._collect(streams, ctx))

    async def _merged(self, streams):
        """(prompt index, output) from every stream, as they arrive."""
        queue: asyncio.Queue = asyncio.Queue()
        end = object()

        async def pump(i, s):
            try:
                async for out in s:
                    await queue.put((i, out))
            finally:
                await queue.put((i, end))

        tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
        try:
            remaining = len(tasks)
            while remaining:
                i, out = await queue.get()
                if out is end:
                    remaining -= 1
                else:
                    yield i, out
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _collect(self, streams, ctx: "_Ctx") -> Response:
        async for i, out in self._merged(streams):
            ctx.add(i, out)
        if ctx.error:
            return from_exception(RuntimeError(ctx.error)).response()
        return JSONResponse({"id": ctx.rid, "object": "text_completion", "created": ctx.created,
                             "model": ctx.req.model, "choices": ctx.final_choices(), "usage": ctx.usage()})

    async def _stream(self, streams, ctx: "_Ctx", include_usage: bool):
        def chunk(choices, usage_value=None):
            body = {"id": ctx.rid, "object": "text_completion", "created": ctx.created, "model": ctx.req.model,
                    "choices": choices}
            if include_usage:
                body["usage"] = usage_value
            return sse(body)

        n = ctx.req.n
        if ctx.req.echo:
            yield chunk([{"index": i * n + j, "text": p if isinstance(p, str) else "", "logprobs": None,
                          "finish_reason": None} for i, p in enumerate(ctx.prompts) for j in range(n)])
        async for i, out in self._merged(streams):
            ctx.add(i, out)
            if ctx.error:
                yield sse(from_exception(RuntimeError(ctx.error)).body())
                yield DONE
                return
            for c in out.outputs:
                if c.text_delta or c.finish_reason is not None or c.logprobs_delta:
                    lp = completion_logprobs(c.logprobs_delta, ctx.req.logprobs or 0) \
                        if ctx.req.logprobs is not None else None
                    yield chunk([{"index": i * n + c.index, "text": c.text_delta, "logprobs": lp,
                                  "finish_reason": c.finish_reason}])
        if include_usage:
            yield chunk([], ctx.usage())
        yield DONE


class _Ctx:
    """Accumulates the outputs of every prompt's request."""

    def __init__(self, rid, created, req: CompletionRequest, prompts, encoded, track) -> None:
        self.rid, self.created, self.req, self.prompts, self.encoded, self.track = \
            rid, created, req, prompts, encoded, track
        self.final: dict[int, object] = {}
        self.tokens = 0
        self.error = None

    def add(self, i: int, out) -> None:
        new = sum(len(c.token_ids_delta) for c in out.outputs)
        self.tokens += new
        self.track.tokens(new)
        self.error = self.error or next((c.error or c.finish_reason for c in out.outputs
                                         if c.finish_reason in ("error", "abort")), None)
        if out.finished:
            self.final[i] = out
            if len(self.final) == len(self.prompts):
                reasons = [c.finish_reason for o in self.final.values() for c in o.outputs]
                self.track.finish(reasons, sum(map(len, self.encoded)), self.cached(), self.tokens)

    def cached(self) -> int:
        return sum(o.num_cached_tokens for o in self.final.values())

    def usage(self) -> dict:
        return usage(sum(map(len, self.encoded)), self.tokens, self.cached(), 0)

    def final_choices(self) -> list:
        choices = []
        for i in range(len(self.prompts)):
            prefix = self.prompts[i] if self.req.echo and isinstance(self.prompts[i], str) else ""
            for c in sorted(self.final[i].outputs, key=lambda c: c.index):
                lp = completion_logprobs(c.logprobs or [], self.req.logprobs or 0, len(prefix)) \
                    if self.req.logprobs is not None else None
                choices.append({"index": i * self.req.n + c.index, "text": prefix + c.text, "logprobs": lp,
                                "finish_reason": c.finish_reason})
        return choices
