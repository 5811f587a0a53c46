"""/health and /metrics on a real server: the vLLM-named series exist and move by exactly what the requests'
usage reports (prompt and generated tokens, prefix-cache hits), and the latency histograms count each request."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import API_KEY, SERVED_NAME, live_server

GAUGES = ("v4stack:num_requests_running", "v4stack:num_requests_waiting", "v4stack:kv_cache_usage_perc",
          "v4stack:prefix_cache_hit_rate")
# A prompt longer than two 128-token blocks, so a repeat finds at least one full cached block.
LONG_PROMPT = " ".join(f"word{i}" for i in range(200))


@pytest.fixture(scope="module")
def server(chat_checkpoint):
    with live_server(chat_checkpoint) as s:
        yield s


def scrape(server) -> dict[str, float]:
    """Every sample of the served checkpoint's series, keyed by sample name (+ finished_reason / le)."""
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model_name") != SERVED_NAME:
                continue
            extra = s.labels.get("finished_reason") or s.labels.get("le")
            samples[s.name + (f"[{extra}]" if extra else "")] = s.value
    return samples


def delta(after: dict, before: dict, name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def test_health_is_ok_without_an_api_key(server):
    assert httpx.get(server.base_url + "/health", timeout=10).status_code == 200


def test_counters_follow_the_usage_of_each_request(server):
    client = OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0)
    before = scrape(server)
    assert all(g in before for g in GAUGES), sorted(before)
    usages = [client.completions.create(model=SERVED_NAME, prompt=LONG_PROMPT, max_tokens=4, temperature=0).usage
              for _ in range(2)]
    after = scrape(server)

    prompt = sum(u.prompt_tokens for u in usages)
    generated = sum(u.completion_tokens for u in usages)
    cached = sum(u.prompt_tokens_details.cached_tokens for u in usages)
    assert usages[0].prompt_tokens > 256 and cached >= 128  # the repeat hit the prefix cache
    assert delta(after, before, "v4stack:prompt_tokens_total") == prompt
    assert delta(after, before, "v4stack:generation_tokens_total") == generated
    assert delta(after, before, "v4stack:prefix_cache_queries_total") == prompt
    assert delta(after, before, "v4stack:prefix_cache_hits_total") == cached
    finished = sum(delta(after, before, k) for k in after if k.startswith("v4stack:request_success_total["))
    assert finished == 2
    for hist in ("time_to_first_token_seconds", "e2e_request_latency_seconds"):
        assert delta(after, before, f"v4stack:{hist}_count") == 2
    assert delta(after, before, "v4stack:inter_token_latency_seconds_count") == generated - 2
    assert after["v4stack:prefix_cache_hit_rate"] == pytest.approx(
        after["v4stack:prefix_cache_hits_total"] / after["v4stack:prefix_cache_queries_total"])
    assert after["v4stack:num_requests_running"] == 0 and after["v4stack:num_requests_waiting"] == 0
