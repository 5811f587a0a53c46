"""The server through the official ``openai`` client (sync, async, streaming) on a real uvicorn server: both
tiers, usage with reasoning tokens, n, stop, logprobs, json_schema with thinking on, a tool-call round trip,
32 concurrent streams against each request run alone, and disconnecting clients freeing their blocks."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from v4stack.chat import V4, encode_messages
from v4stack.engine.tokenizer import Tokenizer
from tests.server.conftest import API_KEY, SERVED_NAME, live_server, wait_until

HI = [{"role": "user", "content": "Hello there"}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather forecast for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 6},
                                                    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                   "required": ["city", "days"]}}}
ANSWER_SCHEMA = {"type": "object", "properties": {"digit": {"type": "integer", "minimum": 0, "maximum": 9},
                                                  "ok": {"type": "boolean"}},
                 "required": ["digit", "ok"], "additionalProperties": False}


@pytest.fixture(scope="module")
def server(chat_checkpoint):
    with live_server(chat_checkpoint) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(chat_checkpoint):
    return Tokenizer(chat_checkpoint)


def prompt_len(tokenizer, messages, thinking, effort=None, tools=None) -> int:
    return len(tokenizer.encode(encode_messages(messages, tools, fmt=V4, thinking=thinking,
                                                reasoning_effort=effort), add_bos=False))


def test_models_list_served_name_and_tiers(client):
    assert {m.id for m in client.models.list()} == {SERVED_NAME, "fast", "expert", "expert-max"}


def test_fast_tier_answers_without_reasoning(client, tokenizer):
    r = client.chat.completions.create(model="fast", messages=HI, max_tokens=4, temperature=0)
    msg = r.choices[0].message
    assert msg.content and getattr(msg, "reasoning_content", None) is None
    assert r.usage.completion_tokens == 4 and r.usage.completion_tokens_details.reasoning_tokens == 0
    assert r.usage.prompt_tokens == prompt_len(tokenizer, HI, thinking=False)
    assert r.choices[0].finish_reason == "length"


def test_expert_tiers_reason_and_count_reasoning_tokens(client, tokenizer):
    r = client.chat.completions.create(model="expert", messages=HI, max_tokens=4, temperature=0)
    msg = r.choices[0].message
    assert msg.reasoning_content  # a random model never closes </think> in 4 tokens: all of it is reasoning
    assert r.usage.completion_tokens_details.reasoning_tokens == 4
    assert r.usage.prompt_tokens == prompt_len(tokenizer, HI, thinking=True, effort="high")
    r = client.chat.completions.create(model="expert-max", messages=HI, max_tokens=1, temperature=0)
    assert r.usage.prompt_tokens == prompt_len(tokenizer, HI, thinking=True, effort="max")
    # per-request override: thinking off on the expert tier
    r = client.chat.completions.create(model="expert", messages=HI, max_tokens=1, temperature=0,
                                       extra_body={"chat_template_kwargs": {"thinking": False}})
    assert r.usage.prompt_tokens == prompt_len(tokenizer, HI, thinking=False)
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


def test_streaming_matches_non_streaming_with_usage(client):
    whole = client.chat.completions.create(model="expert", messages=HI, max_tokens=5, temperature=0)
    chunks = list(client.chat.completions.create(model="expert", messages=HI, max_tokens=5, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert reasoning == whole.choices[0].message.reasoning_content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 5


def test_async_client_streams_both_tiers(server):
    async def run():
        async with AsyncOpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0) as aclient:
            out = {}
            for tier in ("fast", "expert"):
                stream = await aclient.chat.completions.create(model=tier, messages=HI, max_tokens=3,
                                                               temperature=0, stream=True)
                parts = {"content": "", "reasoning": ""}
                async for chunk in stream:
                    d = chunk.choices[0].delta
                    parts["content"] += d.content or ""
                    parts["reasoning"] += getattr(d, "reasoning_content", None) or ""
                out[tier] = parts
            return out
    out = asyncio.run(run())
    assert out["fast"]["content"] and not out["fast"]["reasoning"]
    assert out["expert"]["reasoning"] and not out["expert"]["content"]


def test_n_two_seeded_choices_are_independent(client):
    r = client.chat.completions.create(model="fast", messages=HI, max_tokens=4, n=2, seed=5, temperature=1.0)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content != r.choices[1].message.content
    again = client.chat.completions.create(model="fast", messages=HI, max_tokens=4, n=2, seed=5, temperature=1.0)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    assert r.usage.completion_tokens == 8


def test_stop_string_cuts_the_text(client):
    full = client.completions.create(model=SERVED_NAME, prompt="The king said", max_tokens=6, temperature=0)
    text = full.choices[0].text
    stop = text[len(text) // 2:len(text) // 2 + 2]
    assert stop.strip(), f"pick a visible stop from {text!r}"
    cut = client.completions.create(model=SERVED_NAME, prompt="The king said", max_tokens=6, temperature=0,
                                    stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_logprobs_greedy_picks_the_top_alternative(client):
    r = client.chat.completions.create(model="fast", messages=HI, max_tokens=3, temperature=0, logprobs=True,
                                       top_logprobs=3)
    items = r.choices[0].logprobs.content
    assert len(items) == 3
    for item in items:
        assert len(item.top_logprobs) == 3
        assert item.top_logprobs[0].token == item.token and item.top_logprobs[0].logprob == item.logprob
        assert [t.logprob for t in item.top_logprobs] == sorted((t.logprob for t in item.top_logprobs), reverse=True)
    assert "".join(i.token for i in items) == r.choices[0].message.content
    legacy = client.completions.create(model=SERVED_NAME, prompt="The king said", max_tokens=2, temperature=0,
                                       logprobs=2)
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == 2 and all(len(t) == 2 for t in lp.top_logprobs) and lp.text_offset[0] == 0


def test_json_schema_answer_after_free_reasoning(client):
    r = client.chat.completions.create(
        model="expert", messages=HI, max_tokens=40, temperature=0, extra_body={"thinking_token_budget": 3},
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}})
    msg = r.choices[0].message
    value = json.loads(msg.content)
    assert set(value) == {"digit", "ok"} and 0 <= value["digit"] <= 9 and isinstance(value["ok"], bool)
    assert msg.reasoning_content and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens_details.reasoning_tokens == 4  # 3 free tokens + the forced </think>


def test_tool_call_round_trip(client, tokenizer):
    first = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=120, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    args = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert isinstance(args["city"], str) and len(args["city"]) <= 6 and 1 <= args["days"] <= 7
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "sunny"}'}]
    second = client.chat.completions.create(model="fast", messages=history, tools=[WEATHER_TOOL],
                                            tool_choice="none", max_tokens=3, temperature=0)
    assert second.choices[0].message.tool_calls is None and second.choices[0].message.content
    assert second.usage.prompt_tokens == prompt_len(tokenizer, history, thinking=False)  # the result is in it


def test_required_tool_call_after_reasoning_streams(client):
    stream = client.chat.completions.create(
        model="expert", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL],
        tool_choice="required", max_tokens=150, temperature=0, stream=True,
        extra_body={"thinking_token_budget": 2})
    names, arguments, finish, content = {}, {}, None, ""
    for chunk in stream:
        d = chunk.choices[0].delta
        content += d.content or ""
        for t in d.tool_calls or ():
            if t.id:
                names[t.index] = t.function.name
            arguments[t.index] = arguments.get(t.index, "") + (t.function.arguments or "")
        finish = chunk.choices[0].finish_reason or finish
    assert names and set(names.values()) == {"get_weather"} and finish == "tool_calls" and content == ""
    for text in arguments.values():
        args = json.loads(text)
        assert len(args["city"]) <= 6 and 1 <= args["days"] <= 7


def test_32_concurrent_streams_equal_each_alone(server, client):
    prompts = [f"Line {i}: the {['king', 'queen', 'fool', 'ghost'][i % 4]} spoke" for i in range(32)]
    alone = [client.completions.create(model=SERVED_NAME, prompt=p, max_tokens=3, temperature=0).choices[0].text
             for p in prompts]

    async def one(aclient, p):
        text = ""
        async for chunk in await aclient.completions.create(model=SERVED_NAME, prompt=p, max_tokens=3,
                                                            temperature=0, stream=True):
            text += chunk.choices[0].text
        return text

    async def run():
        async with AsyncOpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0) as aclient:
            return await asyncio.gather(*(one(aclient, p) for p in prompts))
    together = asyncio.run(run())
    assert together == alone
    assert len(set(alone)) > 1  # the prompts really differ in what they produce


def test_disconnecting_clients_free_their_blocks(server):
    engine = server.engine
    body = {"model": "fast", "messages": HI, "max_tokens": 500, "temperature": 0, "stream": True}

    async def leave_early(aclient):
        async with aclient.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: ") and "content" in line:
                    break  # the first content chunk arrived: go away mid-stream

    async def run():
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120,
                                     headers={"Authorization": f"Bearer {API_KEY}"}) as aclient:
            await asyncio.gather(*(leave_early(aclient) for _ in range(10)))
    asyncio.run(run())
    assert wait_until(lambda: not engine.has_unfinished() and not any(engine.cache.held_blocks().values()))
