"""Tiers are configuration: a tiers file can route ``expert`` to a second checkpoint (the server then hosts two
models), and a request's ``chat_template_kwargs.thinking`` overrides its tier's mode."""

from __future__ import annotations

import json

import pytest
from openai import OpenAI

from tests.server.conftest import API_KEY, SERVED_NAME, live_server
from v4stack.modelio.writer import V4_VOCAB, tiny_config, write_checkpoint

PROMPT = "The king said"
MESSAGES = [{"role": "user", "content": "Who goes there?"}]


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory):
    """Same shape as the served test checkpoint, other random weights (seed 4 instead of 3)."""
    cfg = tiny_config(vocab_size=V4_VOCAB, num_hidden_layers=2, compress_ratios=(0, 0, 0), n_routed_experts=4,
                      hc_mult=1, num_hash_layers=1, moe_intermediate_size=64)
    return write_checkpoint(tmp_path_factory.mktemp("expert_ckpt"), cfg, seed=4)


@pytest.fixture(scope="module")
def tiers_file(tmp_path_factory, second_checkpoint):
    path = tmp_path_factory.mktemp("tiers") / "tiers.json"
    path.write_text(json.dumps({"tiers": {
        "fast": {"model": None, "thinking": False, "effort": None},
        "expert": {"model": str(second_checkpoint), "thinking": True, "effort": "high"}}}))
    return path


def greedy_text(client: OpenAI, model: str) -> str:
    return client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0).choices[0].text


def test_a_tier_can_serve_a_second_checkpoint(chat_checkpoint, second_checkpoint, tiers_file):
    with live_server(chat_checkpoint, tiers_file=tiers_file) as both, live_server(second_checkpoint) as alone:
        client_both = OpenAI(base_url=both.v1, api_key=API_KEY, max_retries=0)
        client_alone = OpenAI(base_url=alone.v1, api_key=API_KEY, max_retries=0)
        assert {m.id for m in client_both.models.list().data} == {SERVED_NAME, "fast", "expert"}
        routes = both.registry.routes
        assert routes["expert"].served is not routes["fast"].served  # two engines, two sets of weights
        expert, fast = greedy_text(client_both, "expert"), greedy_text(client_both, "fast")
        assert expert == greedy_text(client_alone, SERVED_NAME)  # the expert tier runs the second checkpoint
        assert fast == greedy_text(client_both, SERVED_NAME) and fast != expert


def test_request_thinking_overrides_the_tier(chat_checkpoint):
    with live_server(chat_checkpoint) as server:
        client = OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0)

        def reply(model: str, **extra) -> tuple[str | None, str | None]:
            m = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=8, temperature=0,
                                               **extra).choices[0].message
            return getattr(m, "reasoning_content", None), m.content

        fast, expert = reply("fast"), reply("expert")
        assert not fast[0] and fast[1]  # no thinking: everything is the answer
        assert expert[0]  # thinking: the text before </think> is reasoning
        assert reply("expert", extra_body={"chat_template_kwargs": {"thinking": False}}) == fast
        assert reply("fast", extra_body={"chat_template_kwargs": {"thinking": True}}) == expert
