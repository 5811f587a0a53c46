"""What the server hosts: loaded checkpoints (one engine each) and the model names that reach them (the
served name and the tiers). A name resolves to a :class:`Route`: the checkpoint plus the chat mode the tier
sets (None for the plain served name: the checkpoint's chat-format default applies).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

from v4stack.chat import ChatFormat, format_for_config
from v4stack.engine.async_engine import AsyncLLMEngine
from v4stack.engine.config import EngineConfig
from v4stack.engine.llm_engine import LLMEngine
from v4stack.engine.sampling_params import checkpoint_sampling_defaults
from v4stack.server.errors import APIError
from v4stack.server.tiers import Tier


@dataclass
class ServedModel:
    """One loaded checkpoint. ``missing_chat_tokens``: spellings of the chat format's special tokens the
    tokenizer lacks (chat requests are refused with a 400 saying so when any is missing)."""

    name: str
    model_dir: Path
    engine: AsyncLLMEngine
    fmt: ChatFormat
    sampling_defaults: dict
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def tokenizer(self):
        return self.engine.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.engine.max_model_len

    @property
    def missing_chat_tokens(self) -> tuple[str, ...]:
        f = self.fmt
        needed = (f.bos, f.eos, f.user_token, f.assistant_token, f.think_open, f.think_close, f.dsml)
        return tuple(t for t in needed if self.tokenizer.token_id(t) is None)

    def token_id(self, token: str) -> int | None:
        return self.tokenizer.token_id(token)


@dataclass(frozen=True)
class Route:
    """A model name's target: the checkpoint and the tier's mode (thinking/effort None: not set by a tier)."""

    name: str
    served: ServedModel
    thinking: bool | None = None
    effort: str | int | None = None


class ModelRegistry:
    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes

    @property
    def served(self) -> list[ServedModel]:
        seen: dict[int, ServedModel] = {}
        for r in self.routes.values():
            seen.setdefault(id(r.served), r.served)
        return list(seen.values())

    def resolve(self, name: str) -> Route:
        route = self.routes.get(name)
        if route is None:
            raise APIError(HTTPStatus.NOT_FOUND, f"model {name!r} does not exist; this server serves "
                           + ", ".join(repr(n) for n in self.routes), "not_found_error", "model", "model_not_found")
        return route

    def start(self) -> None:
        for s in self.served:
            s.engine.start()

    def shutdown(self) -> None:
        for s in self.served:
            s.engine.shutdown()


def load_served(model_dir: Path, name: str, config: EngineConfig) -> ServedModel:
    engine = LLMEngine.from_model_dir(model_dir, config)
    fmt = format_for_config(json.loads((model_dir / "config.json").read_text()))
    return ServedModel(name, model_dir, AsyncLLMEngine(engine), fmt, checkpoint_sampling_defaults(model_dir))


def build_registry(model_dir: Path, served_name: str, tiers: tuple[Tier, ...], config: EngineConfig,
                   loader=load_served) -> ModelRegistry:
    """Load the served checkpoint and every other checkpoint a tier names (each once); check each tier's
    effort against its checkpoint's chat format (ValueError with one line)."""
    main = loader(model_dir, served_name, config)
    by_dir = {model_dir.resolve(): main}
    routes = {served_name: Route(served_name, main)}
    for tier in tiers:
        target = by_dir.get(tier.model.resolve()) if tier.model is not None else main
        if target is None:
            target = by_dir[tier.model.resolve()] = loader(tier.model, tier.model.name, config)
        try:
            target.fmt.effort.check(tier.effort)
        except ValueError as exc:
            raise ValueError(f"tier {tier.name!r}: {exc}") from None
        if tier.name in routes:
            raise ValueError(f"tier {tier.name!r}: the name is already the served model's name")
        routes[tier.name] = Route(tier.name, target, tier.thinking, tier.effort)
    return ModelRegistry(routes)
