"""Server test fixtures: a small random checkpoint whose tokenizer is the official V4 tokenizer (so every chat
special token exists: thinking, DSML tool calls, EOS), and a real uvicorn server on 127.0.0.1 (a free port
picked by the OS) in a background thread, one per test module."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from v4stack.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from v4stack.server.app import ServerSettings, create_app
from v4stack.server.models import build_registry
from v4stack.server.tiers import load_tiers
from v4stack.modelio.writer import V4_VOCAB, tiny_config, write_checkpoint

API_KEY = "test-key"
SERVED_NAME = "tiny-v4"
START_TIMEOUT_S = 60  # uvicorn start-up on a loaded 2-core machine
TEST_CACHE_BYTES = 64 << 20  # plenty for the tiny model's short requests
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"


@pytest.fixture(scope="session")
def chat_checkpoint(tmp_path_factory) -> Path:
    """2 sliding-window layers, width 128, V4's 129,280-token vocabulary and tokenizer (random weights)."""
    cfg = tiny_config(vocab_size=V4_VOCAB, num_hidden_layers=2, compress_ratios=(0, 0, 0), n_routed_experts=4,
                      hc_mult=1, num_hash_layers=1, moe_intermediate_size=64)
    return write_checkpoint(tmp_path_factory.mktemp("chat_ckpt"), cfg, seed=3)


@dataclass
class LiveServer:
    base_url: str
    registry: object
    api_key: str | None

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    @property
    def engine(self):
        """The LLMEngine behind the served checkpoint (for accounting checks)."""
        return self.registry.routes[SERVED_NAME].served.engine.engine


def engine_config(**scheduler) -> EngineConfig:
    return EngineConfig(numerics="fp32", max_model_len=scheduler.pop("max_model_len", 2048),
                        scheduler=SchedulerConfig(**scheduler), cache=CacheConfig(memory_bytes=TEST_CACHE_BYTES))


@contextmanager
def live_server(model_dir: Path, api_key: str | None = API_KEY, tiers_file=None, **scheduler):
    registry = build_registry(model_dir, SERVED_NAME, load_tiers(tiers_file), engine_config(**scheduler))
    app = create_app(registry, ServerSettings(api_key=api_key))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="test-uvicorn")
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", registry, api_key)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_until(predicate, timeout_s: float = 20.0, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()
