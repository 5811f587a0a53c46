"""A DeepSeek-V4.1 checkpoint served by a real uvicorn server on 127.0.0.1, through the official ``openai``
client: completions equal the model's own greedy drive, and V4.1's numeric reasoning effort (1-100) reaches the
engine's prompt through the Expert tier (the tier's default when the request gives none, the request's value
when it does), encoded with the V4.1 chat format."""

from __future__ import annotations

import pytest
import torch
from openai import OpenAI

from tests.server.conftest import API_KEY, live_server
from v4stack.chat import V4_1, encode_messages
from v4stack.config.numerics import Numerics
from v4stack.engine.tokenizer import Tokenizer
from v4stack.modelio.loader import load_model
from v4stack.modelio.writer import V4_VOCAB, tiny_v41_config, write_v41_checkpoint

HI = [{"role": "user", "content": "Hello there"}]
TIER_EXPERT_EFFORT = 75  # tiers.json "expert": effort "high", which V4.1 numbers 75


@pytest.fixture(scope="module")
def v41_chat_checkpoint(tmp_path_factory):
    """The tiny V4.1 model with V4's 129,280-token vocabulary and tokenizer (every chat token exists)."""
    return write_v41_checkpoint(tmp_path_factory.mktemp("v41_chat"), tiny_v41_config(vocab_size=V4_VOCAB), seed=5)


@pytest.fixture(scope="module")
def server(v41_chat_checkpoint):
    with live_server(v41_chat_checkpoint, max_model_len=1024, max_num_seqs=8) as s:  # fits the 64 MiB test cache
        yield s


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0)


def recorded_prompts(server) -> list[list[int]]:
    """Prompt ids the engine receives from now on."""
    engine, seen = server.engine, []
    add = engine.add_request

    def recording(request_id, prompt, params=None):
        seen.append(list(prompt))
        return add(request_id, prompt, params)
    engine.add_request = recording
    return seen


def test_completions_equal_the_models_greedy_drive(client, v41_chat_checkpoint):
    text = "The king said"
    r = client.completions.create(model="tiny-v4", prompt=text, max_tokens=4, temperature=0)
    tok = Tokenizer(v41_chat_checkpoint)
    model = load_model(v41_chat_checkpoint, Numerics.exact_fp32(), progress=False)
    state, out = model.new_state(), []
    logits = model(state, torch.tensor(tok.encode(text))).logits
    for _ in range(4):
        out.append(int(logits[0].argmax()))
        logits = model(state, torch.tensor(out[-1:])).logits
    assert r.usage.completion_tokens == len(out) or tok.eos_id in out
    assert r.choices[0].text == tok.decode(out[:out.index(tok.eos_id)] if tok.eos_id in out else out)


@pytest.mark.parametrize("effort", [None, 1, 37, 100])
def test_reasoning_effort_passes_through_the_expert_tier(client, server, v41_chat_checkpoint, effort):
    seen = recorded_prompts(server)
    extra = {} if effort is None else {"reasoning_effort": effort}
    r = client.chat.completions.create(model="expert", messages=HI, max_tokens=2, temperature=0, extra_body=extra)
    assert r.choices[0].finish_reason in ("length", "stop")
    level = TIER_EXPERT_EFFORT if effort is None else effort
    prompt = encode_messages(HI, fmt=V4_1, thinking=True, reasoning_effort=level)
    assert f"Reasoning Effort: {level} " in prompt
    assert seen == [Tokenizer(v41_chat_checkpoint).encode(prompt, add_bos=False)]


def test_an_effort_outside_1_to_100_is_a_400(client):
    from openai import BadRequestError

    with pytest.raises(BadRequestError):
        client.chat.completions.create(model="expert", messages=HI, max_tokens=2, extra_body={"reasoning_effort": 101})
