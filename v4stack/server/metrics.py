"""Prometheus metrics at ``/metrics``, named like vLLM's (``vllm:`` -> ``v4stack:``), labelled by
``model_name`` (the checkpoint):

* gauges read at scrape time: ``v4stack:num_requests_running``, ``v4stack:num_requests_waiting``,
  ``v4stack:kv_cache_usage_perc`` (0..1, the fullest pool), ``v4stack:prefix_cache_hit_rate`` (cached prompt
  tokens / prompt tokens since start);
* counters: ``v4stack:prompt_tokens_total``, ``v4stack:generation_tokens_total``,
  ``v4stack:request_success_total`` (label ``finished_reason``), ``v4stack:prefix_cache_queries_total``,
  ``v4stack:prefix_cache_hits_total`` (tokens);
* histograms (seconds, measured in the server from the request's arrival): ``v4stack:time_to_first_token_seconds``,
  ``v4stack:inter_token_latency_seconds``, ``v4stack:e2e_request_latency_seconds``.

One ``CollectorRegistry`` per app (no process-global state), so several servers in one process (tests) do
not mix their figures.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

# Bucket edges (seconds): CPU runs of the demo model take 10 ms..seconds per token; GPUs take milliseconds.
TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
E2E_BUCKETS = (0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0)
LABEL = "model_name"


class _EngineGauges:
    """Custom collector: gauges computed from the engines and the prefix counters when scraped."""

    def __init__(self, metrics: "ServerMetrics") -> None:
        self.metrics = metrics

    def collect(self):
        running = GaugeMetricFamily("v4stack:num_requests_running", "Requests in the running batch.", labels=[LABEL])
        waiting = GaugeMetricFamily("v4stack:num_requests_waiting", "Requests waiting to run.", labels=[LABEL])
        usage = GaugeMetricFamily("v4stack:kv_cache_usage_perc", "KV-cache usage, 0..1 (fullest pool).",
                                  labels=[LABEL])
        hit = GaugeMetricFamily("v4stack:prefix_cache_hit_rate", "Cached prompt tokens / prompt tokens.",
                                labels=[LABEL])
        for served in self.metrics.served:
            engine = served.engine.engine
            running.add_metric([served.name], engine.num_running)
            waiting.add_metric([served.name], engine.num_waiting)
            usage.add_metric([served.name], engine.cache.usage)
            queries, hits = self.metrics.prefix_counts.get(served.name, (0, 0))
            hit.add_metric([served.name], hits / queries if queries else 0.0)
        yield from (running, waiting, usage, hit)


class ServerMetrics:
    def __init__(self, served) -> None:
        self.served = served
        self.registry = CollectorRegistry()
        r = self.registry
        self.prompt_tokens = Counter("v4stack:prompt_tokens", "Prompt tokens processed.", [LABEL], registry=r)
        self.generation_tokens = Counter("v4stack:generation_tokens", "Tokens generated.", [LABEL], registry=r)
        self.request_success = Counter("v4stack:request_success", "Finished requests.", [LABEL, "finished_reason"],
                                       registry=r)
        self.prefix_queries = Counter("v4stack:prefix_cache_queries", "Prompt tokens looked up in the prefix "
                                      "cache.", [LABEL], registry=r)
        self.prefix_hits = Counter("v4stack:prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                                   [LABEL], registry=r)
        self.ttft = Histogram("v4stack:time_to_first_token_seconds", "Time to first token.", [LABEL],
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("v4stack:inter_token_latency_seconds", "Time between output tokens.", [LABEL],
                             buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("v4stack:e2e_request_latency_seconds", "Request latency, arrival to last token.",
                             [LABEL], buckets=E2E_BUCKETS, registry=r)
        self.prefix_counts: dict[str, tuple[int, int]] = {}
        r.register(_EngineGauges(self))

    def track(self, model_name: str) -> "RequestTrack":
        return RequestTrack(self, model_name)


class RequestTrack:
    """Timing of one request (all its completions): ``tokens(k)`` when k new tokens arrive, ``finish`` once."""

    def __init__(self, metrics: ServerMetrics, model: str) -> None:
        self.m, self.model = metrics, model
        self.start = self.last = time.monotonic()
        self.first = None

    def tokens(self, count: int) -> None:
        if count <= 0:
            return
        now = time.monotonic()
        if self.first is None:
            self.first = self.last = now
            self.m.ttft.labels(self.model).observe(now - self.start)
            count -= 1
        if count > 0:  # tokens arriving in one update (n > 1, or several steps) share the gap since the last
            gap = (now - self.last) / count
            for _ in range(count):
                self.m.itl.labels(self.model).observe(gap)
        self.last = now

    def finish(self, reasons: list[str], prompt_tokens: int, cached_tokens: int, generated: int) -> None:
        m, model = self.m, self.model
        m.e2e.labels(model).observe(time.monotonic() - self.start)
        m.prompt_tokens.labels(model).inc(prompt_tokens)
        m.generation_tokens.labels(model).inc(generated)
        m.prefix_queries.labels(model).inc(prompt_tokens)
        m.prefix_hits.labels(model).inc(cached_tokens)
        q, h = m.prefix_counts.get(model, (0, 0))
        m.prefix_counts[model] = (q + prompt_tokens, h + cached_tokens)
        for reason in reasons:
            m.request_success.labels(model, reason).inc()
