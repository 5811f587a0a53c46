"""Starting engine streams so that refusals become HTTP errors, and tying a request's life to its client.

``open_stream`` runs ``AsyncLLMEngine.generate`` up to its first wait: the engine validates and queues the
request synchronously before it first awaits an output, so after one event-loop turn either the request is
queued or its ParameterError / EngineFullError is known, and the handler can still answer 400 / 503 instead
of a 200 stream. ``until_disconnected`` cancels a non-streaming request's work when its client goes away
(streaming responses get this from Starlette, which cancels the body iterator on disconnect); cancelling the
iteration runs ``generate``'s cleanup, which aborts the request and frees its cache blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Awaitable, TypeVar

from fastapi import Request

T = TypeVar("T")
DISCONNECT_POLL_S = 0.05  # how often a non-streaming handler checks that its client is still there


class Stream:
    """An engine output stream whose first item is already being fetched."""

    def __init__(self, agen: AsyncIterator, first: asyncio.Future) -> None:
        self._agen, self._first = agen, first

    async def __aiter__(self):
        try:
            yield await self._first
            async for out in self._agen:
                yield out
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream; an unfinished request is aborted (generate's cleanup)."""
        if not self._first.done():  # still waiting for the first output
            self._first.cancel()
            with contextlib.suppress(BaseException):
                await self._first  # generate's cleanup runs in that task
        await self._agen.aclose()


async def open_stream(engine, request_id: str, prompt_ids: list[int], params) -> Stream:
    agen = engine.generate(request_id, prompt_ids, params)
    first = asyncio.ensure_future(agen.__anext__())
    await asyncio.sleep(0)  # let generate run to its first await: validation and queueing happen before it
    if first.done() and first.exception() is not None:
        raise first.exception()
    return Stream(agen, first)


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise CancelledError."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise asyncio.CancelledError("client disconnected")
