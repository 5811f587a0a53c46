"""The engine behind the server: a background thread steps the ``LLMEngine``; asyncio code adds requests and
reads each request's outputs as an async stream.

Threading contract: only the engine thread touches the ``LLMEngine`` after ``start()``. Callers talk to it
through a thread-safe inbox (add, abort); outputs come back through one ``asyncio.Queue`` per request, filled
with ``loop.call_soon_threadsafe``. A request is validated in the caller's thread before it is queued (the
checks read only constants: context limit, cache capacity, vocabulary), so a bad request fails at once
with a ``ParameterError`` and never reaches the engine. Leaving the ``generate`` stream early (a client that
disconnects) aborts the request, which frees its cache blocks in the engine's next iteration.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import AsyncIterator

from v4stack.engine.llm_engine import EngineFullError, LLMEngine
from v4stack.engine.outputs import CompletionOutput, RequestOutput
from v4stack.engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5  # how long the idle engine thread blocks on its inbox before checking for shutdown


@dataclass(frozen=True)
class _Add:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    prompt: str | None


@dataclass(frozen=True)
class _Abort:
    request_id: str


class AsyncLLMEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._lock = threading.Lock()  # guards _streams and _pending
        self._pending = 0  # requests (completions) accepted but not yet handed to the engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "AsyncLLMEngine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="v4stack-engine", daemon=True)
            self._thread.start()
        return self

    def shutdown(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def alive(self) -> bool:
        """The engine thread is running (health checks)."""
        return self._thread is not None and self._thread.is_alive()

    # ---- caller side -------------------------------------------------------------------------------
    def encode(self, prompt: str) -> list[int]:
        return self.engine.encode(prompt)

    async def generate(self, request_id: str, prompt: str | list[int],
                       params: SamplingParams | None = None) -> AsyncIterator[RequestOutput]:
        """Stream the outputs of one request (each with the step's deltas); the last has ``finished`` True.
        Raises ParameterError / EngineFullError before anything is queued."""
        params = params or SamplingParams()
        ids = list(prompt) if isinstance(prompt, (list, tuple)) else self.engine.encode(prompt)
        self.engine.check_request(ids, params)
        stream: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if request_id in self._streams:
                raise ValueError(f"request id {request_id!r} is already in use")
            limit = self.engine.config.scheduler.max_waiting_requests
            if self._pending + self.engine.num_waiting + params.n > limit:
                raise EngineFullError(f"the waiting queue is full ({limit} requests)")
            self._pending += params.n
            self._streams[request_id] = (asyncio.get_running_loop(), stream)
        self._inbox.put(_Add(request_id, ids, params, prompt if isinstance(prompt, str) else None))
        finished = False
        try:
            while not finished:
                out = await stream.get()
                finished = out.finished
                yield out
        finally:
            if not finished:
                self.abort(request_id)
            with self._lock:
                self._streams.pop(request_id, None)

    def abort(self, request_id: str) -> None:
        self._inbox.put(_Abort(request_id))

    # ---- engine thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._drain(block=not self.engine.has_unfinished())
            if self.engine.has_unfinished():
                try:
                    outs = self.engine.step()
                except Exception:  # LLMEngine.step already contains model errors; this is a last resort
                    log.exception("engine step raised")
                    self.errors += 1
                    continue
                for out in outs:
                    self._deliver(out)

    def _drain(self, block: bool) -> None:
        try:
            msg = self._inbox.get(timeout=IDLE_WAIT_S) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while msg is not None:
            self._handle(msg)
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, msg) -> None:
        if isinstance(msg, _Abort):
            self.engine.abort(msg.request_id)
            return
        with self._lock:
            self._pending -= msg.params.n
        try:
            self.engine.add_request(msg.request_id, msg.prompt_ids, msg.params)
        except Exception as exc:  # e.g. a race on the queue bound: the request ends with the reason
            self._deliver(RequestOutput(msg.request_id, msg.prompt, msg.prompt_ids,
                                        [CompletionOutput(i, finish_reason="error", error=str(exc))
                                         for i in range(msg.params.n)], True))

    def _deliver(self, out: RequestOutput) -> None:
        with self._lock:
            target = self._streams.get(out.request_id)
        if target is None:  # the caller went away: make sure the engine lets go of it
            if not out.finished:
                self.engine.abort(out.request_id)
            return
        loop, stream = target
        loop.call_soon_threadsafe(stream.put_nowait, out)
