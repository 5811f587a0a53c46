"""The FastAPI application: routes, API-key check, error handlers, metrics, the web chat page.

``create_app(registry, settings)`` builds an app around already-loaded models (tests and ``v4stack serve``
both use it); its lifespan starts the engine threads and stops them at shutdown.

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /health``,
``GET /metrics``, ``GET /`` (the chat page) and ``/static/*`` (its files). With an API key set, every
``/v1`` route needs ``Authorization: Bearer KEY`` (401 otherwise); health, metrics and the page do not.
"""

from __future__ import annotations

import hmac
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from v4stack import __version__
from v4stack.server.chat import ChatCompletions
from v4stack.server.completions import Completions
from v4stack.server.errors import APIError, install_handlers
from v4stack.server.metrics import ServerMetrics
from v4stack.server.models import ModelRegistry
from v4stack.server.protocol import (ChatCompletionRequest, ChatCompletionResponse, CompletionRequest,
                                     CompletionResponse, ErrorResponse, ModelCard, ModelList)

STATIC_DIR = Path(__file__).with_name("static")
ERROR_RESPONSES = {int(s): {"model": ErrorResponse} for s in (HTTPStatus.BAD_REQUEST, HTTPStatus.UNAUTHORIZED,
                                                              HTTPStatus.NOT_FOUND, HTTPStatus.SERVICE_UNAVAILABLE)}


@dataclass(frozen=True)
class ServerSettings:
    """api_key: required bearer token for /v1 routes (None: open); warm_grammar: build the grammar tokenizer
    of every model in the background at start-up (seconds for a 129K vocabulary), so the first constrained
    request does not wait for it."""

    api_key: str | None = None
    warm_grammar: bool = True


def create_app(registry: ModelRegistry, settings: ServerSettings = ServerSettings()) -> FastAPI:
    metrics = ServerMetrics(registry.served)
    chat, completions = ChatCompletions(registry, metrics), Completions(registry, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        registry.start()
        if settings.warm_grammar:
            for served in registry.served:
                if served.engine.engine.structured is not None:
                    threading.Thread(target=served.engine.engine.structured.tokenizer, daemon=True,
                                     name="v4stack-grammar-warmup").start()
        yield
        registry.shutdown()

    app = FastAPI(title="v4stack", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible server for DeepSeek-V4 checkpoints")
    install_handlers(app)

    async def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise APIError(HTTPStatus.UNAUTHORIZED, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                           "authentication_error", code="invalid_api_key")

    auth = [Depends(check_key)]

    @app.get("/v1/models", response_model=ModelList, dependencies=auth, responses=ERROR_RESPONSES)
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=name, created=r.served.created, root=str(r.served.model_dir),
                                         max_model_len=r.served.max_model_len)
                               for name, r in registry.routes.items()])

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, dependencies=auth,
              responses=ERROR_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await chat(body, request)

    @app.post("/v1/completions", response_model=CompletionResponse, dependencies=auth, responses=ERROR_RESPONSES)
    async def text_completions(body: CompletionRequest, request: Request) -> Response:
        return await completions(body, request)

    @app.get("/health")
    async def health() -> Response:
        dead = [s.name for s in registry.served if not s.engine.alive]
        if dead:
            return PlainTextResponse("engine stopped: " + ", ".join(dead), HTTPStatus.SERVICE_UNAVAILABLE)
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.state.registry, app.state.metrics = registry, metrics
    return app
