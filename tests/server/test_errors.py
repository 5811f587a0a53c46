"""Malformed requests get the right 4xx with an OpenAI error body (never a 500, never a traceback), and a
schemathesis fuzz over the server's own OpenAPI document finds no 5xx. The server here has a 64-token
context (oversize prompts are easy to build, and fuzzed requests stay short) and a waiting queue of 2."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.server.conftest import API_KEY, live_server

CONTEXT = 64
QUEUE = 2
FUZZ_CASES = 12  # per operation (6 operations): bounded so the fuzz stays well under a minute here
OK_MSG = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def server(chat_checkpoint):
    with live_server(chat_checkpoint, max_model_len=CONTEXT, max_waiting_requests=QUEUE) as s:
        yield s


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=60, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        yield c


def chat(**fields):
    return {"model": "fast", "messages": OK_MSG, "max_tokens": 1} | fields


CASES = [  # (name, path, body or raw bytes, headers, status, param)
    ("wrong type temperature", "/v1/chat/completions", chat(temperature="hot"), None, 400, "temperature"),
    ("wrong type messages", "/v1/chat/completions", chat(messages="hi"), None, 400, "messages"),
    ("wrong type n", "/v1/chat/completions", chat(n=[2]), None, 400, "n"),
    ("missing messages", "/v1/chat/completions", {"model": "fast"}, None, 400, "messages"),
    ("missing model", "/v1/completions", {"prompt": "x"}, None, 400, "model"),
    ("empty messages", "/v1/chat/completions", chat(messages=[]), None, 400, "messages"),
    ("unknown role", "/v1/chat/completions", chat(messages=[{"role": "robot", "content": "x"}]), None, 400,
     "messages[0].role"),
    ("huge n", "/v1/chat/completions", chat(n=100000), None, 400, "n"),
    ("negative max_tokens", "/v1/chat/completions", chat(max_tokens=-5), None, 400, "max_tokens"),
    ("zero max_completion_tokens", "/v1/chat/completions", chat(max_completion_tokens=0), None, 400, "max_tokens"),
    ("negative completions max_tokens", "/v1/completions", {"model": "fast", "prompt": "x", "max_tokens": -1}, None,
     400, "max_tokens"),
    ("top_p out of range", "/v1/chat/completions", chat(top_p=1.5), None, 400, "top_p"),
    ("too many top_logprobs", "/v1/chat/completions", chat(logprobs=True, top_logprobs=50), None, 400, "logprobs"),
    ("top_logprobs without logprobs", "/v1/chat/completions", chat(top_logprobs=2), None, 400, "top_logprobs"),
    ("invalid JSON", "/v1/chat/completions", b'{"model": "fast", "messages": [', None, 400, None),
    ("unknown tool", "/v1/chat/completions",
     chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}), None, 400,
     "tool_choice.function.name"),
    ("tool_choice required without tools", "/v1/chat/completions", chat(tool_choice="required"), None, 400,
     "tool_choice"),
    ("malformed tool", "/v1/chat/completions", chat(tools=[{"type": "function"}]), None, 400, "tools[0].function"),
    ("bad schema", "/v1/chat/completions",
     chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}),
     None, 400, "response_format.json_schema.schema"),
    ("json_schema without schema", "/v1/chat/completions", chat(response_format={"type": "json_schema"}), None, 400,
     "response_format.json_schema"),
    ("unknown effort", "/v1/chat/completions", chat(reasoning_effort="medium"), None, 400, "reasoning_effort"),
    ("oversize prompt", "/v1/chat/completions", chat(messages=[{"role": "user", "content": "word " * 200}]), None,
     400, "max_tokens"),
    ("oversize completion prompt", "/v1/completions", {"model": "fast", "prompt": list(range(5, 5 + CONTEXT + 1))},
     None, 400, "max_tokens"),
    ("token id out of vocabulary", "/v1/completions", {"model": "fast", "prompt": [10 ** 7]}, None, 400,
     "prompt token id"),
    ("empty prompt list", "/v1/completions", {"model": "fast", "prompt": []}, None, 400, "prompt"),
    ("wrong API key", "/v1/chat/completions", chat(), {"Authorization": "Bearer wrong"}, 401, None),
    ("no API key", "/v1/models", None, {"Authorization": ""}, 401, None),
    ("unknown model", "/v1/chat/completions", chat(model="gpt-9"), None, 404, "model"),
    ("queue full", "/v1/completions", {"model": "fast", "prompt": "x", "max_tokens": 1, "n": QUEUE + 1}, None, 503,
     None),
]


@pytest.mark.parametrize("name,path,body,headers,status,param", CASES, ids=[c[0] for c in CASES])
def test_malformed_request_gets_openai_error(http, name, path, body, headers, status, param):
    if body is None:
        r = http.get(path, headers=headers)
    elif isinstance(body, bytes):
        r = http.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        r = http.post(path, json=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]
    assert error["param"] == param


def test_errors_leave_the_server_serving(http):
    r = http.post("/v1/chat/completions", json=chat(max_tokens=2, temperature=0))
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2


def test_fuzz_finds_no_server_error(server):
    """Every operation of /openapi.json with FUZZ_CASES generated requests each; 503 only as 'queue full'."""
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/models", "/v1/chat/completions", "/v1/completions"}
    calls = []

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=FUZZ_CASES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
            calls.append(response.status_code)
            queue_full = response.status_code == 503 and response.json()["error"]["code"] == "queue_full"
            assert response.status_code < 500 or queue_full, f"{case.method} {case.path}: {response.text}"

        check()
    assert len(calls) >= len(operations)
